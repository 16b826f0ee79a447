//! The CloudWatch Logs sink's cost to the build: a command printing short lines, run with
//! `--log-file` alone and with `--log-file` plus `--cloudwatch-logs` to moto, measured in one
//! process so both see the same machine load. Prints figures and ratios; run with
//! `cargo build --release -p buildagent && cargo bench -p buildagent-tests --bench log_sinks`.
//!
//! The bench starts moto servers of its own on free loopback ports (the shared one of the tests
//! would have to hold millions of events) and stops them at the end.
//!
//! - build time: 1 GiB of 40-byte lines (`BUILDAGENT_BENCH_LOG_MIB` to change the size), every
//!   sink run with `--log-flush-timeout 0s` (the end does not wait for the service; the lines
//!   left undelivered are counted from the warning). For each run: the whole run's wall time,
//!   the build's part (until the build's last log line, before the sinks' end and the agent's
//!   exit; measured alike for every run), the CPU time of the agent and the build's commands,
//!   and moto's CPU time meanwhile; ratios to `--log-file` alone in the same round (targets:
//!   whole run and build part <= 1.2x), and the agent's peak RSS (target < 64 MiB). Two
//!   settings: the build and moto on all the machine's CPUs together (moto, a Python server,
//!   takes CPU the build would have had), and the build on all CPUs but the last with moto on
//!   the last one (the service's CPU is not the build's, as with a remote service), where the
//!   sink also sends to a closed port (everything spills: the sink's own cost).
//!   `BUILDAGENT_BENCH_ROUNDS` (default 1) runs each of the five that many times, each round
//!   starting with another one; every round is printed, then the medians. The log files are on
//!   `/dev/shm` when there is one.
//! - delivery: a smaller log (16 MiB, `BUILDAGENT_BENCH_DELIVER_MIB`) delivered whole to moto
//!   (`--log-flush-timeout 10m`): the build's wall time with the wait for the last line, and
//!   the sink's throughput in events per second (moto, a Python server, is the bottleneck).

use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::resource::{getrusage, UsageWho};

mod common;
use common::{agent, median};

const LINE: &str = "a short line of build output, 40 bytes.";

/// A moto server of the bench's own, stopped (by its pid) when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    /// The CPU time moto used so far (user and system, from `/proc`): what it took from the
    /// machine's cores while the build ran beside it.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // After the command's name in parentheses: state is field 3, utime and stime 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// A moto server, on the given CPUs when `cpus` is set (`taskset -c`).
    fn start(cpus: Option<&str>) -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let port_arg = port.to_string();
        let moto = [
            "python3",
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port_arg,
        ];
        let child = on_cpus(cpus, &moto)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server (scripts/services.sh installs moto)");
        let endpoint = format!("http://127.0.0.1:{port}");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while buildagent_tests::services::http_get(&addr, "/moto-api/", &[])
            .map_or(true, |r| r.status != 200)
        {
            assert!(Instant::now() < deadline, "moto did not start on {addr}");
            std::thread::sleep(Duration::from_millis(200));
        }
        Moto { child, endpoint }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn buildspec(dir: &Path, lines: u64) {
    std::fs::write(
        dir.join("buildspec.yml"),
        format!("version: 0.2\nphases:\n  build:\n    commands:\n      - yes '{LINE}' | head -n {lines}\n"),
    )
    .unwrap();
}

/// `command` with `args`, on the given CPUs when `cpus` is set (`taskset -c CPUS`, which execs
/// it: its CPU time is the child's as before).
fn on_cpus(cpus: Option<&str>, command: &[&str]) -> Command {
    match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).args(command);
            c
        }
        None => {
            let mut c = Command::new(command[0]);
            c.args(&command[1..]);
            c
        }
    }
}

/// One `buildagent run` of the bench's buildspec with `extra` options, its AWS endpoint
/// `endpoint`, on `cpus` when set; its wall time.
fn run_agent(dir: &Path, endpoint: &str, cpus: Option<&str>, extra: &[&str]) -> Duration {
    // Every run writes a new log file: truncating the last run's 1 GiB one would have ext4 write
    // it out when the agent closes it (its replace-by-truncate heuristic, auto_da_alloc), half a
    // second of the agent's exit in some runs and not in others.
    let _ = std::fs::remove_file(dir.join("build.log"));
    let agent = agent();
    let mut command = on_cpus(cpus, &[agent.to_str().unwrap()]);
    let t = Instant::now();
    let status = command
        .current_dir(dir)
        .args([
            "run",
            "-m",
            "--no-cache",
            "--log-format",
            "codebuild",
            "--log-file",
            "build.log",
        ])
        .args(extra)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    t.elapsed()
}

/// The end of the log file (the bench's own memory stays small: the children forked later
/// inherit its peak RSS in their `ru_maxrss`).
fn log_tail(dir: &Path) -> String {
    let mut file = std::fs::File::open(dir.join("build.log")).unwrap();
    let len = file.metadata().unwrap().len();
    file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))
        .unwrap();
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).unwrap();
    String::from_utf8_lossy(&tail).into_owned()
}

/// The undelivered count of the log's warning (0 without one).
fn undelivered(dir: &Path) -> u64 {
    let text = log_tail(dir);
    text.lines()
        .rev()
        .find_map(|l| {
            let rest = l.split("Warning: ").nth(1)?;
            rest.split(" log line(s) were not delivered")
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// How long the agent ran after the build's own last line (the sinks' end, the summary and the
/// agent's exit): from the last `[Container]` line of the log that is not the warning about
/// undelivered lines (it comes with the sinks' end) to `ended`, when the agent had exited. The
/// same for every run, the file alone included (its exit, e.g. removing the build's cgroup, is
/// in it too).
fn after_build(dir: &Path, ended: SystemTime) -> Duration {
    let text = log_tail(dir);
    let Some(last) = text
        .lines()
        .rev()
        .find(|l| l.starts_with("[Container] ") && !l.contains("log line(s) were not delivered"))
    else {
        return Duration::ZERO;
    };
    // `[Container] YYYY/MM/DD HH:MM:SS.ffffff ...`: seconds of the (UTC) day.
    let seconds = |line: &str| -> Option<f64> {
        let time = line.strip_prefix("[Container] ")?.split(' ').nth(1)?;
        let mut parts = time.split(':');
        let h: f64 = parts.next()?.parse().ok()?;
        let m: f64 = parts.next()?.parse().ok()?;
        let s: f64 = parts.next()?.parse().ok()?;
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let end = ended.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() % 86_400.0;
    match seconds(last) {
        Some(at) => Duration::from_secs_f64((end - at).rem_euclid(86_400.0)),
        None => Duration::ZERO,
    }
}

/// CPU time (user and system) of the children waited for so far.
fn children_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let micros = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    Duration::from_micros(micros(usage.user_time()) + micros(usage.system_time()))
}

/// The runs of one kind: the whole run, the build's own part (less what came after its last
/// line), the CPU time of the agent and the build's commands, and moto's meanwhile.
#[derive(Default)]
struct Runs {
    whole: Vec<Duration>,
    own: Vec<Duration>,
    cpu: Vec<Duration>,
    moto_cpu: Vec<Duration>,
}

impl Runs {
    /// Runs `run` (the agent, its log to `dir`) and keeps its figures.
    fn add(&mut self, dir: &Path, moto: &Moto, run: impl FnOnce() -> Duration) {
        let (cpu, moto_cpu) = (children_cpu(), moto.cpu());
        let whole = run();
        self.cpu.push(children_cpu() - cpu);
        self.moto_cpu.push(moto.cpu() - moto_cpu);
        self.whole.push(whole);
        self.own
            .push(whole.saturating_sub(after_build(dir, SystemTime::now())));
    }

    /// Round `i` against the same round of `alone`.
    fn round(&self, i: usize, alone: &Runs) -> String {
        format!(
            "whole {}, build part {}, CPU {}, moto's CPU {:.2} s",
            ratio(self.whole[i], alone.whole[i].as_secs_f64()),
            ratio(self.own[i], alone.own[i].as_secs_f64()),
            ratio(self.cpu[i], alone.cpu[i].as_secs_f64()),
            self.moto_cpu[i].as_secs_f64(),
        )
    }

    /// Round `i` of a run without a sink: its figures in seconds.
    fn alone(&self, i: usize) -> String {
        format!(
            "whole {:.2} s, build part {:.2} s, CPU {:.2} s",
            self.whole[i].as_secs_f64(),
            self.own[i].as_secs_f64(),
            self.cpu[i].as_secs_f64()
        )
    }

    /// The medians of a run without a sink, in seconds.
    fn median_alone(&self) -> String {
        let m = |runs: &Vec<Duration>| median(runs.clone()).as_secs_f64();
        format!(
            "whole {:.2} s, build part {:.2} s, CPU {:.2} s",
            m(&self.whole),
            m(&self.own),
            m(&self.cpu)
        )
    }

    /// The medians against those of `alone`.
    fn medians(&self, alone: &Runs) -> String {
        let m = |runs: &Vec<Duration>| median(runs.clone());
        format!(
            "whole {}, build part {}, CPU {}, moto's CPU {:.2} s",
            ratio(m(&self.whole), m(&alone.whole).as_secs_f64()),
            ratio(m(&self.own), m(&alone.own).as_secs_f64()),
            ratio(m(&self.cpu), m(&alone.cpu).as_secs_f64()),
            m(&self.moto_cpu).as_secs_f64(),
        )
    }
}

/// `run` in seconds and as a ratio to `alone` (seconds).
fn ratio(run: Duration, alone: f64) -> String {
    format!(
        "{:.2} s ({:.2}x)",
        run.as_secs_f64(),
        run.as_secs_f64() / alone
    )
}

fn max_rss_mib() -> i64 {
    getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss() / 1024
}

fn main() {
    // The log files on tmpfs when there is one: a 1 GiB file per run written back to disk behind
    // the runs would land on some runs and not others.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let dir = dir.path();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cores >= 2,
        "the bench needs 2 CPUs: one for the service, the rest for the build"
    );
    // The build's CPUs and the service's in the pinned runs: the last CPU for moto, the rest for
    // the build (the agent, its threads and the build's commands).
    let build_cpus = if cores == 2 {
        "0".to_string()
    } else {
        format!("0-{}", cores - 2)
    };
    let moto_cpu = (cores - 1).to_string();
    let pin = Some(build_cpus.as_str());
    let moto = Moto::start(None);
    let pinned = Moto::start(Some(&moto_cpu));
    let mib: u64 = std::env::var("BUILDAGENT_BENCH_LOG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let lines = (mib << 20) / (LINE.len() as u64 + 1);
    buildspec(dir, lines);

    let rounds: usize = std::env::var("BUILDAGENT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let (mut alone, mut shared, mut alone_pinned, mut sink_pinned, mut closed_pinned) = (
        Runs::default(),
        Runs::default(),
        Runs::default(),
        Runs::default(),
        Runs::default(),
    );
    // Peak RSS first (RUSAGE_CHILDREN keeps the largest of the children waited for): the file
    // alone, then with the sink.
    run_agent(dir, &moto.endpoint, None, &[]);
    let rss_alone = max_rss_mib();
    let warmup = format!("bench:{}-rss", std::process::id());
    run_agent(
        dir,
        &moto.endpoint,
        None,
        &["--cloudwatch-logs", &warmup, "--log-flush-timeout", "0s"],
    );
    let rss_sink = max_rss_mib();
    let (mut left_shared, mut left_pinned) = (0, 0);
    // Nothing listens on port 9 of loopback: connections are refused, everything spills.
    let closed = "http://127.0.0.1:9";
    for round in 0..rounds {
        let group = format!("bench:{}-{round}", std::process::id());
        let sink = ["--cloudwatch-logs", &group, "--log-flush-timeout", "0s"];
        // Each round starts with another of the five, so that none always follows the same one.
        for kind in (0..5).map(|k| (k + round) % 5) {
            match kind {
                0 => alone.add(dir, &moto, || run_agent(dir, &moto.endpoint, None, &[])),
                1 => {
                    shared.add(dir, &moto, || run_agent(dir, &moto.endpoint, None, &sink));
                    if round == 0 {
                        left_shared = undelivered(dir);
                    }
                }
                2 => alone_pinned.add(dir, &pinned, || run_agent(dir, &pinned.endpoint, pin, &[])),
                3 => {
                    sink_pinned.add(dir, &pinned, || {
                        run_agent(dir, &pinned.endpoint, pin, &sink)
                    });
                    if round == 0 {
                        left_pinned = undelivered(dir);
                    }
                }
                _ => closed_pinned.add(dir, &pinned, || run_agent(dir, closed, pin, &sink)),
            }
        }
        println!(
            "round {}: all on {cores} CPUs: --log-file alone: {}; with --cloudwatch-logs to moto: {}. \
             The build on CPU {} and moto on CPU {moto_cpu}: --log-file alone: {}; with --cloudwatch-logs to moto: {}; to a closed port: {}",
            round + 1,
            alone.alone(round),
            shared.round(round, &alone),
            build_cpus,
            alone_pinned.alone(round),
            sink_pinned.round(round, &alone_pinned),
            closed_pinned.round(round, &alone_pinned),
        );
    }
    println!(
        "build time, {mib} MiB in {lines} lines, medians of {rounds} rounds, all with --log-flush-timeout 0s \
         (the build part: until the build's last line, before the sinks' end and the agent's exit; CPU: the agent's and the commands'). \
         The build and moto on the same {cores} CPUs: --log-file alone: {}; with --cloudwatch-logs to moto: {} (moto's CPU is taken from the build's). \
         The build on CPU {} and moto on CPU {moto_cpu} (the service's CPU not the build's, as a remote one): --log-file alone: {}; \
         with --cloudwatch-logs to moto: {} (targets: whole and build part <= 1.2x); to a closed port (all spilled): {}; \
         peak RSS {rss_alone} MiB alone, {rss_sink} MiB with the sink (largest child so far; target < 64 MiB); \
         {left_shared} of {} events not delivered when the build ended beside moto, {left_pinned} with moto on its own CPU (spilled to disk, reported)",
        alone.median_alone(),
        shared.medians(&alone),
        build_cpus,
        alone_pinned.median_alone(),
        sink_pinned.medians(&alone_pinned),
        closed_pinned.medians(&alone_pinned),
        lines + 8,
    );

    // Delivery of a smaller log, whole.
    let deliver_mib: u64 = std::env::var("BUILDAGENT_BENCH_DELIVER_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let lines = (deliver_mib << 20) / (LINE.len() as u64 + 1);
    buildspec(dir, lines);
    let alone = run_agent(dir, &moto.endpoint, None, &[]);
    let group = format!("bench-deliver:{}", std::process::id());
    let delivered = run_agent(
        dir,
        &moto.endpoint,
        None,
        &["--cloudwatch-logs", &group, "--log-flush-timeout", "10m"],
    );
    assert_eq!(undelivered(dir), 0, "every line delivered");
    println!(
        "delivery, {deliver_mib} MiB in {lines} lines, all delivered to moto: --log-file alone {:.2} s, with the sink until the last line arrived {:.2} s, \
         ratio {:.2}x; {:.0} events/s into moto",
        alone.as_secs_f64(),
        delivered.as_secs_f64(),
        delivered.as_secs_f64() / alone.as_secs_f64(),
        lines as f64 / delivered.as_secs_f64()
    );
}
