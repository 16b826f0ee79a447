//! The fleet worker against moto on loopback. Prints figures; run with
//! `cargo build --release -p buildagent && cargo bench -p buildagent-tests --bench fleet`
//! (services up: `eval "$(bash scripts/services.sh env)"`).
//!
//! - pickup: time from the start of a submit (record written, message sent) to the build's
//!   first command, one build at a time on an idle worker (long polling): p50 and p99 of 50.
//! - idle cost: receive calls per minute of an idle worker (from its `/metrics`) and its RSS,
//!   over `BUILDAGENT_BENCH_IDLE_SECS` (default 60).
//! - throughput: 200 one-command builds through 2 workers of 2 slots, against the same builds
//!   run by `buildagent run` processes 4 at a time on this machine (no queue, no record, no
//!   CloudWatch Logs). The jobs are queued first; the time runs from the workers' start.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use buildagent_fleet::job::Job;
use buildagent_fleet::queue::JobQueue;
use buildagent_fleet::record::{BuildRecord, RecordStore};
use buildagent_tests::services;

mod common;
use common::agent;

struct Setup {
    runtime: tokio::runtime::Runtime,
    queue: JobQueue,
    records: RecordStore,
    env: [(&'static str, String); 4],
}

fn setup(name: &str) -> Setup {
    let aws = services::aws();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("bench-{name}-{nanos:x}");
    let (queue, records) = runtime.block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&aws.endpoint)
            .region(aws_config::Region::new(aws.region.clone()))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                &aws.access_key_id,
                &aws.secret_access_key,
                None,
                None,
                "bench",
            ))
            .load()
            .await;
        let sqs = aws_sdk_sqs::Client::new(&config);
        let url = sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        buildagent_fleet::setup::ensure_table(&dynamodb, &name)
            .await
            .unwrap();
        (
            JobQueue::open(sqs, &url).await.unwrap(),
            RecordStore::new(dynamodb, &name),
        )
    });
    Setup {
        runtime,
        queue,
        records,
        env: aws.env(),
    }
}

impl Setup {
    fn submit(&self, commands: &[String]) -> Job {
        let mut job = Job::new("bench");
        let mut yaml = "version: 0.2\nphases:\n  build:\n    commands:\n".to_string();
        for command in commands {
            yaml.push_str(&format!(
                "      - {}\n",
                serde_json::to_string(command).unwrap()
            ));
        }
        job.buildspec_override = Some(yaml);
        self.runtime.block_on(async {
            let number = self.records.next_build_number("bench").await.unwrap();
            let record = BuildRecord::queued(&job.id, "bench", number, Some(job.to_json()));
            self.records.create_queued(&record).await.unwrap();
            self.queue.send(&job.to_json()).await.unwrap();
        });
        job
    }

    fn worker(&self, dir: &Path, name: &str, slots: u32) -> (Proc, String) {
        let log = dir.join(format!("{name}.log"));
        let child = Proc(
            Command::new(agent())
                .args(["worker", "--queue", self.queue.url(), "--table"])
                .arg(self.records.table())
                .args(["--listen", "127.0.0.1:0", "--slots", &slots.to_string()])
                .arg("--work-dir")
                .arg(dir.join(format!("{name}-work")))
                .envs(self.env.clone())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.strip_prefix("listening on http://"))
            {
                return (child, addr.to_string());
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finished(&self, ids: &[String]) -> bool {
        let records = self.runtime.block_on(self.records.get_many(ids)).unwrap();
        records.len() == ids.len() && records.iter().all(|r| r.status.is_finished())
    }
}

fn metric(addr: &str, name: &str) -> f64 {
    let text = services::http_get(addr, "/metrics", &[]).unwrap().text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A worker process, killed and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stop(child: Proc) {
    drop(child);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn pickup(dir: &Path) {
    let setup = setup("pickup");
    let marks = dir.join("pickup");
    std::fs::create_dir_all(&marks).unwrap();
    let (worker, _) = setup.worker(dir, "pickup", 1);
    // The worker is polling once it has made its first receive call.
    std::thread::sleep(Duration::from_millis(500));
    let mut times = Vec::new();
    for _ in 0..50 {
        let started = SystemTime::now();
        let job = setup.submit(&[format!(
            "date +%s%N > {}/${{CODEBUILD_BUILD_ID#*:}}",
            marks.display()
        )]);
        let file = marks.join(job.uuid());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !setup.finished(std::slice::from_ref(&job.id)) {
            assert!(Instant::now() < deadline, "the build did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
        let ns: u128 = std::fs::read_to_string(&file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let first = UNIX_EPOCH + Duration::from_nanos(ns as u64);
        times.push(first.duration_since(started).unwrap_or_default());
    }
    stop(worker);
    times.sort();
    println!(
        "pickup (submit -> first command, 50 builds one at a time, idle worker): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
    );
}

fn idle(dir: &Path) {
    let secs: u64 = std::env::var("BUILDAGENT_BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let setup = setup("idle");
    let (worker, addr) = setup.worker(dir, "idle", 1);
    std::thread::sleep(Duration::from_secs(1));
    let before = metric(&addr, "buildagent_worker_receive_calls_total");
    std::thread::sleep(Duration::from_secs(secs));
    let after = metric(&addr, "buildagent_worker_receive_calls_total");
    let rss = rss_kib(worker.0.id());
    stop(worker);
    println!(
        "idle worker over {secs} s: {:.1} receive calls/min, RSS {:.1} MiB",
        (after - before) * 60.0 / secs as f64,
        rss as f64 / 1024.0
    );
}

fn throughput(dir: &Path) {
    const BUILDS: usize = 200;
    let setup = setup("throughput");
    // Every job is queued first: the figure is the workers', not the submitter's.
    let ids: Vec<String> = (0..BUILDS)
        .map(|_| setup.submit(&["true".into()]).id)
        .collect();
    let started = Instant::now();
    let (a, _) = setup.worker(dir, "tp-a", 2);
    let (b, _) = setup.worker(dir, "tp-b", 2);
    // Counted from the workers' lines, not by reading the table: polling 200 records would
    // load moto, which the workers share.
    let finished = || {
        ["tp-a", "tp-b"]
            .iter()
            .map(|w| {
                std::fs::read_to_string(dir.join(format!("{w}.log")))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.starts_with("finished "))
                    .count()
            })
            .sum::<usize>()
    };
    let deadline = Instant::now() + Duration::from_secs(900);
    while finished() < BUILDS {
        assert!(Instant::now() < deadline, "the builds did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let fleet = started.elapsed();
    assert!(setup.finished(&ids));
    stop(a);
    stop(b);

    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("buildspec.yml"),
        "version: 0.2\nphases:\n  build:\n    commands: ['true']\n",
    )
    .unwrap();
    let started = Instant::now();
    let mut running: Vec<Child> = Vec::new();
    for _ in 0..BUILDS {
        if running.len() == 4 {
            let child = running.remove(0);
            assert!(child.wait_with_output().unwrap().status.success());
        }
        running.push(
            Command::new(agent())
                .current_dir(&src)
                .args(["run", "--no-cache", "--log-format", "codebuild"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for child in running {
        assert!(child.wait_with_output().unwrap().status.success());
    }
    let local = started.elapsed();
    println!(
        "throughput, {BUILDS} one-command builds: 2 workers x 2 slots {:.2} s (queued first; from the \
         workers' start), `buildagent run` 4 at a time {:.2} s: {:.2}x",
        fleet.as_secs_f64(),
        local.as_secs_f64(),
        fleet.as_secs_f64() / local.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks one part.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let dir = tempfile::Builder::new()
        .prefix("buildagent-bench-fleet-")
        .tempdir()
        .unwrap();
    type Part = fn(&Path);
    let parts: [(&str, Part); 3] = [
        ("pickup", pickup),
        ("idle", idle),
        ("throughput", throughput),
    ];
    for (name, part) in parts {
        if filter.as_deref().is_none_or(|f| name.contains(f)) {
            part(dir.path());
        }
    }
    if std::env::var_os("BUILDAGENT_BENCH_KEEP").is_some() {
        // The workers' logs, for a look at where the time went.
        println!("kept {}", dir.keep().display());
    }
}
