//! `buildagent worker` against moto (SQS, DynamoDB, CloudWatch Logs): real worker processes,
//! each test on its own queue and table. Builds record what they do in files of a shared
//! directory (one per build, named by its uuid), which is how "exactly once" and "never twice
//! at once" are checked.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use buildagent_fleet::job::Job;
use buildagent_fleet::queue::JobQueue;
use buildagent_fleet::record::{BuildRecord, BuildStatus, RecordStore};
use buildagent_tests::services::{self, Aws};
use buildagent_tests::{alive, binary};

/// A queue, a table and a directory shared by the builds.
struct Fleet {
    aws: Aws,
    runtime: tokio::runtime::Runtime,
    sqs: aws_sdk_sqs::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    queue: JobQueue,
    records: RecordStore,
    dir: tempfile::TempDir,
}

fn unique() -> String {
    uuid_hex()[..10].to_string()
}

fn uuid_hex() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

impl Fleet {
    /// A new queue with this visibility timeout, and a new table.
    fn new(test: &str, visibility_secs: u32) -> Fleet {
        let aws = services::aws();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = runtime.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(&aws.endpoint)
                .region(aws_config::Region::new(aws.region.clone()))
                .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                    &aws.access_key_id,
                    &aws.secret_access_key,
                    None,
                    None,
                    "test",
                ))
                .load(),
        );
        let sqs = aws_sdk_sqs::Client::new(&config);
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
        let name = format!("worker-{test}-{}", unique());
        let (queue, records) = runtime.block_on(async {
            let url = sqs
                .create_queue()
                .queue_name(&name)
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                    visibility_secs.to_string(),
                )
                .send()
                .await
                .expect("moto creates the queue")
                .queue_url
                .unwrap();
            buildagent_fleet::setup::ensure_table(&dynamodb, &name)
                .await
                .expect("moto creates the table");
            let queue = JobQueue::open(sqs.clone(), &url).await.unwrap();
            (queue, RecordStore::new(dynamodb, &name))
        });
        let dir = tempfile::Builder::new()
            .prefix("buildagent-fleet-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("marks")).unwrap();
        Fleet {
            aws,
            runtime,
            sqs,
            logs,
            queue,
            records,
            dir,
        }
    }

    fn marks(&self) -> PathBuf {
        self.dir.path().join("marks")
    }

    /// Submits a job of `project` running `commands` in its build phase (a record QUEUED, then
    /// the message), as `submit` does. Returns the job.
    fn submit(&self, project: &str, commands: &[String]) -> Job {
        let mut job = Job::new(project);
        let mut yaml = "version: 0.2\nphases:\n  build:\n    commands:\n".to_string();
        for command in commands {
            yaml.push_str(&format!(
                "      - {}\n",
                serde_json::to_string(command).unwrap()
            ));
        }
        job.buildspec_override = Some(yaml);
        self.submit_job(&job);
        job
    }

    fn submit_job(&self, job: &Job) {
        self.runtime.block_on(async {
            let number = self
                .records
                .next_build_number(&job.project_name)
                .await
                .unwrap();
            let record =
                BuildRecord::queued(&job.id, &job.project_name, number, Some(job.to_json()));
            self.records.create_queued(&record).await.unwrap();
            self.queue.send(&job.to_json()).await.unwrap();
        });
    }

    fn record(&self, id: &str) -> BuildRecord {
        self.runtime
            .block_on(self.records.get(id))
            .unwrap()
            .unwrap_or_else(|| panic!("no record of {id}"))
    }

    /// Messages visible and in flight.
    fn queue_depth(&self) -> (u64, u64) {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .runtime
            .block_on(
                self.sqs
                    .get_queue_attributes()
                    .queue_url(self.queue.url())
                    .attribute_names(A::ApproximateNumberOfMessages)
                    .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                    .send(),
            )
            .unwrap();
        let attrs = out.attributes.unwrap_or_default();
        let get = |a: A| attrs.get(&a).and_then(|v| v.parse().ok()).unwrap_or(0);
        (
            get(A::ApproximateNumberOfMessages),
            get(A::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// The messages of a build's log stream.
    fn log(&self, group: &str, stream: &str) -> Vec<String> {
        let out = self.runtime.block_on(
            self.logs
                .get_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .start_from_head(true)
                .send(),
        );
        match out {
            Ok(out) => out
                .events
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| e.message)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// A worker process with these extra arguments (`--listen 127.0.0.1:0` always).
    fn worker(&self, name: &str, extra: &[&str]) -> Worker {
        self.worker_with_env(name, extra, &[])
    }

    /// [`Fleet::worker`] with these variables in the worker's environment.
    fn worker_with_env(&self, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        let log = self.dir.path().join(format!("{name}.log"));
        let work = self.dir.path().join(format!("{name}-work"));
        let child = Command::new(binary())
            .args(["worker", "--queue", self.queue.url(), "--table"])
            .arg(self.records.table())
            .args(["--listen", "127.0.0.1:0", "--work-dir"])
            .arg(&work)
            .args(extra)
            .envs(self.aws.env())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("the worker starts");
        let mut worker = Worker {
            child: Some(child),
            log,
            addr: String::new(),
        };
        wait_for(
            "the worker's listening line",
            Duration::from_secs(20),
            || {
                worker.addr = worker
                    .stderr()
                    .lines()
                    .find_map(|l| l.strip_prefix("listening on http://").map(str::to_string))
                    .unwrap_or_default();
                !worker.addr.is_empty()
            },
        );
        worker
    }

    /// Waits until every build of `ids` has a finished record.
    fn wait_finished(&self, ids: &[String], timeout: Duration) -> Vec<BuildRecord> {
        let mut records = Vec::new();
        wait_for("the builds' final records", timeout, || {
            records = self.runtime.block_on(self.records.get_many(ids)).unwrap();
            records.len() == ids.len() && records.iter().all(|r| r.status.is_finished())
        });
        records
    }
}

/// A worker process, SIGKILLed and reaped when dropped (no test leaves one behind).
struct Worker {
    child: Option<Child>,
    log: PathBuf,
    addr: String,
}

impl Worker {
    fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    fn get(&self, path: &str) -> (u16, String) {
        let response = services::http_get(&self.addr, path, &[]).expect("the worker answers");
        (response.status, response.text())
    }

    /// The value of an unlabelled metric (or of `name{labels}`).
    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    /// Waits for the process to exit; its status code.
    fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not exit within {timeout:?}; its log:\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {}:\n{}", self.log.display(), self.stderr());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lines(path: &Path) -> Vec<String> {
    match fs::File::open(path) {
        Ok(file) => BufReader::new(file).lines().map(Result::unwrap).collect(),
        Err(_) => Vec::new(),
    }
}

/// A command that appends `<word> <epoch seconds.nanoseconds>` to the build's file.
fn mark(fleet: &Fleet, word: &str) -> String {
    format!(
        "echo \"{word} $(date +%s.%N)\" >> {}/${{CODEBUILD_BUILD_ID#*:}}",
        fleet.marks().display()
    )
}

fn times(lines: &[String], word: &str) -> Vec<f64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(word).and_then(|t| t.trim().parse().ok()))
        .collect()
}

#[test]
fn two_workers_with_two_slots_run_twenty_builds_each_exactly_once_with_records_and_logs() {
    let fleet = Fleet::new("twenty", 30);
    let a = fleet.worker("a", &["--slots", "2"]);
    let b = fleet.worker("b", &["--slots", "2"]);
    let jobs: Vec<Job> = (0..20)
        .map(|i| {
            fleet.submit(
                "twenty",
                &[
                    mark(&fleet, "ran"),
                    format!("echo build number {i} says hello"),
                ],
            )
        })
        .collect();
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let records = fleet.wait_finished(&ids, Duration::from_secs(180));
    for (job, record) in jobs.iter().zip(&records) {
        assert_eq!(record.id, job.id);
        assert_eq!(record.status, BuildStatus::Succeeded, "{record:?}");
        assert_eq!(record.attempt, 1, "{record:?}");
        assert_eq!(record.current_phase, "COMPLETED");
        let marks = lines(&fleet.marks().join(job.uuid()));
        assert_eq!(marks.len(), 1, "{}: {marks:?}", job.id);
        let build = record
            .phases
            .iter()
            .find(|p| p.phase_type == "BUILD")
            .expect("a BUILD phase");
        assert_eq!(build.phase_status.as_deref(), Some("SUCCEEDED"));
        let logs = record
            .logs
            .as_ref()
            .expect("the record says where the log is");
        assert_eq!(logs.group_name, "/aws/codebuild/twenty");
        assert_eq!(logs.stream_name, job.uuid());
    }
    // Every build's log is in CloudWatch Logs, its own output included.
    for (i, job) in jobs.iter().enumerate() {
        let log = fleet.log("/aws/codebuild/twenty", job.uuid());
        let hello = format!("build number {i} says hello");
        assert!(
            log.iter().any(|l| l.trim_end() == hello),
            "{}: {log:?}",
            job.id
        );
    }
    // Both workers took builds, and their counts add up (counted just after the final record).
    wait_for("the workers' counts", Duration::from_secs(10), || {
        a.metric("buildagent_worker_builds_total{status=\"SUCCEEDED\"}")
            + b.metric("buildagent_worker_builds_total{status=\"SUCCEEDED\"}")
            == 20.0
    });
    let (done_a, done_b) = (
        a.metric("buildagent_worker_builds_total{status=\"SUCCEEDED\"}"),
        b.metric("buildagent_worker_builds_total{status=\"SUCCEEDED\"}"),
    );
    assert_eq!(done_a + done_b, 20.0);
    assert!(done_a > 0.0 && done_b > 0.0, "a {done_a}, b {done_b}");
    assert_eq!(a.metric("buildagent_worker_slots"), 2.0);
    wait_for("no running build", Duration::from_secs(10), || {
        a.metric("buildagent_worker_builds_running") == 0.0
    });
    // The message goes just after the final record.
    wait_for("an empty queue", Duration::from_secs(10), || {
        fleet.queue_depth() == (0, 0)
    });
}

#[test]
fn a_killed_workers_build_is_taken_over_as_attempt_2_and_never_runs_twice_at_once() {
    let fleet = Fleet::new("takeover", 3);
    let mut a = fleet.worker("a", &[]);
    let job = fleet.submit(
        "takeover",
        &[
            format!(
                "echo $$ > {}/pid-${{CODEBUILD_BUILD_ID#*:}}",
                fleet.marks().display()
            ),
            mark(&fleet, "start"),
            "sleep 4".into(),
            mark(&fleet, "end"),
        ],
    );
    let file = fleet.marks().join(job.uuid());
    wait_for("the first attempt's start", Duration::from_secs(30), || {
        !times(&lines(&file), "start").is_empty()
    });
    // The machine dies: the worker and its build's processes.
    let shell: i32 = fs::read_to_string(fleet.marks().join(format!("pid-{}", job.uuid())))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    a.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(shell),
        nix::sys::signal::Signal::SIGKILL,
    );
    a.wait_exit(Duration::from_secs(5));
    let killed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let _b = fleet.worker("b", &[]);
    let record = fleet
        .wait_finished(std::slice::from_ref(&job.id), Duration::from_secs(60))
        .remove(0);
    assert_eq!(record.status, BuildStatus::Succeeded, "{record:?}");
    assert_eq!(record.attempt, 2, "{record:?}");
    assert_eq!(record.history.len(), 1, "{record:?}");
    assert!(
        record.history[0].outcome.contains("lost its lease"),
        "{record:?}"
    );
    let marks = lines(&file);
    let (starts, ends) = (times(&marks, "start"), times(&marks, "end"));
    assert_eq!((starts.len(), ends.len()), (2, 1), "{marks:?}");
    // The second attempt began after the first was gone.
    assert!(starts[1] > killed, "{marks:?}, killed at {killed}");
    // The message goes just after the final record.
    wait_for("an empty queue", Duration::from_secs(10), || {
        fleet.queue_depth() == (0, 0)
    });
}

#[test]
fn a_build_outliving_three_visibility_timeouts_is_never_redelivered_while_its_worker_lives() {
    let fleet = Fleet::new("long", 2);
    let a = fleet.worker("a", &[]);
    let b = fleet.worker("b", &[]);
    let job = fleet.submit(
        "long",
        &[mark(&fleet, "start"), "sleep 7".into(), mark(&fleet, "end")],
    );
    let record = fleet
        .wait_finished(std::slice::from_ref(&job.id), Duration::from_secs(60))
        .remove(0);
    assert_eq!(record.status, BuildStatus::Succeeded, "{record:?}");
    assert_eq!(record.attempt, 1, "{record:?}");
    let marks = lines(&fleet.marks().join(job.uuid()));
    assert_eq!(marks.len(), 2, "{marks:?}");
    let extensions = a.metric("buildagent_worker_lease_extensions_total")
        + b.metric("buildagent_worker_lease_extensions_total");
    assert!(extensions >= 3.0, "{extensions} lease extensions");
    let dropped = a.metric("buildagent_worker_duplicates_dropped_total")
        + b.metric("buildagent_worker_duplicates_dropped_total");
    assert_eq!(dropped, 0.0, "the message was delivered again");
    // The message goes just after the final record.
    wait_for("an empty queue", Duration::from_secs(10), || {
        fleet.queue_depth() == (0, 0)
    });
}

#[test]
fn drain_under_load_finishes_running_builds_and_leaves_the_rest_queued() {
    let fleet = Fleet::new("drain", 30);
    let mut a = fleet.worker("a", &["--slots", "2"]);
    let jobs: Vec<Job> = (0..6)
        .map(|_| {
            fleet.submit(
                "drain",
                &[mark(&fleet, "start"), "sleep 2".into(), mark(&fleet, "end")],
            )
        })
        .collect();
    let started = |fleet: &Fleet| {
        jobs.iter()
            .filter(|j| fleet.marks().join(j.uuid()).exists())
            .count()
    };
    wait_for("two running builds", Duration::from_secs(30), || {
        started(&fleet) == 2
    });
    assert_eq!(a.get("/readyz"), (200, "ready\n".into()));
    a.signal(nix::sys::signal::Signal::SIGTERM);
    wait_for("readyz to say draining", Duration::from_secs(1), || {
        a.get("/readyz") == (503, "draining\n".into())
    });
    assert_eq!(a.get("/healthz"), (200, "ok\n".into()));
    assert_eq!(a.metric("buildagent_worker_draining"), 1.0);
    assert_eq!(a.wait_exit(Duration::from_secs(30)), 0, "{}", a.stderr());
    // The two running builds finished; nothing else started; no message is held.
    let finished: Vec<&Job> = jobs
        .iter()
        .filter(|j| fleet.record(&j.id).status == BuildStatus::Succeeded)
        .collect();
    assert_eq!(finished.len(), 2);
    assert_eq!(started(&fleet), 2);
    for job in &jobs {
        let record = fleet.record(&job.id);
        if record.status != BuildStatus::Succeeded {
            assert_eq!(record.status, BuildStatus::Queued, "{record:?}");
        }
    }
    assert_eq!(fleet.queue_depth(), (4, 0));
    // Another worker runs the rest, each once.
    let _b = fleet.worker("b", &["--slots", "2"]);
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    for record in fleet.wait_finished(&ids, Duration::from_secs(60)) {
        assert_eq!(record.status, BuildStatus::Succeeded, "{record:?}");
        assert_eq!(record.attempt, 1);
    }
    for job in &jobs {
        assert_eq!(lines(&fleet.marks().join(job.uuid())).len(), 2);
    }
    // The message goes just after the final record.
    wait_for("an empty queue", Duration::from_secs(10), || {
        fleet.queue_depth() == (0, 0)
    });
}

#[test]
fn a_second_signal_stops_running_builds_and_puts_them_back_on_the_queue() {
    let fleet = Fleet::new("force", 30);
    let mut a = fleet.worker("a", &[]);
    let job = fleet.submit(
        "force",
        &[
            mark(&fleet, "start"),
            "sleep 30".into(),
            mark(&fleet, "end"),
        ],
    );
    let file = fleet.marks().join(job.uuid());
    wait_for("the build's start", Duration::from_secs(30), || {
        file.exists()
    });
    a.signal(nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    a.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(a.wait_exit(Duration::from_secs(20)), 0, "{}", a.stderr());
    let record = fleet.record(&job.id);
    assert_eq!(record.status, BuildStatus::Queued, "{record:?}");
    assert!(
        record.history[0]
            .outcome
            .contains("interrupted by shutdown"),
        "{record:?}"
    );
    assert_eq!(fleet.queue_depth(), (1, 0));
    // The next worker runs it as attempt 2.
    let _b = fleet.worker("b", &[]);
    let record = fleet
        .wait_finished(std::slice::from_ref(&job.id), Duration::from_secs(60))
        .remove(0);
    assert_eq!(record.status, BuildStatus::Succeeded, "{record:?}");
    assert_eq!(record.attempt, 2, "{record:?}");
    let marks = lines(&file);
    assert_eq!(
        (times(&marks, "start").len(), times(&marks, "end").len()),
        (2, 1)
    );
}

#[test]
fn stop_ends_a_running_build_as_stopped_with_no_process_left() {
    let fleet = Fleet::new("stop", 30);
    let a = fleet.worker("a", &[]);
    let pid_file = fleet.marks().join("sleep-pid");
    let job = fleet.submit(
        "stop",
        &[format!(
            "sleep 300 & echo $! > {}; wait",
            pid_file.display()
        )],
    );
    wait_for("the build's sleep", Duration::from_secs(30), || {
        fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
    });
    let sleep: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(sleep));
    let asked = Instant::now();
    fleet
        .runtime
        .block_on(fleet.records.request_stop(&job.id))
        .unwrap();
    let record = fleet
        .wait_finished(std::slice::from_ref(&job.id), Duration::from_secs(30))
        .remove(0);
    let took = asked.elapsed();
    assert_eq!(record.status, BuildStatus::Stopped, "{record:?}");
    assert_eq!(record.status_reason.as_deref(), Some("stopped by request"));
    assert!(!alive(sleep), "the build's sleep {sleep} outlived it");
    assert!(took < Duration::from_secs(15), "{took:?}");
    wait_for("the STOPPED count", Duration::from_secs(10), || {
        a.metric("buildagent_worker_builds_total{status=\"STOPPED\"}") == 1.0
    });
    // The message goes just after the final record.
    wait_for("an empty queue", Duration::from_secs(10), || {
        fleet.queue_depth() == (0, 0)
    });
}

#[test]
fn a_malformed_message_fails_its_record_with_the_reason_and_is_removed() {
    let fleet = Fleet::new("malformed", 30);
    let a = fleet.worker("a", &[]);
    let id = format!("malformed:{}", uuid_v4());
    let missing = serde_json::json!({ "schemaVersion": 1, "id": id }).to_string();
    let message = fleet.runtime.block_on(async {
        fleet.queue.send(&missing).await.unwrap();
        fleet.queue.send("this is not JSON").await.unwrap()
    });
    let records = fleet.wait_finished(
        &[id.clone(), format!("invalid:{message}")],
        Duration::from_secs(30),
    );
    assert_eq!(records[0].status, BuildStatus::Failed);
    let reason = records[0].status_reason.clone().unwrap_or_default();
    assert!(reason.contains("projectName"), "{reason}");
    assert_eq!(records[1].status, BuildStatus::Failed);
    let reason = records[1].status_reason.clone().unwrap_or_default();
    assert!(reason.contains("not JSON"), "{reason}");
    wait_for("the messages to go", Duration::from_secs(10), || {
        fleet.queue_depth() == (0, 0)
    });
    assert_eq!(a.metric("buildagent_worker_messages_invalid_total"), 2.0);
    assert!(
        a.stderr().contains(&format!("invalid job {id}")),
        "{}",
        a.stderr()
    );
}

#[test]
fn once_runs_one_build_and_exits_with_its_status_and_idle_exit_exits_when_idle() {
    let fleet = Fleet::new("once", 30);
    let job = fleet.submit("once", &["exit 3".into()]);
    let mut a = fleet.worker("a", &["--once"]);
    assert_eq!(a.wait_exit(Duration::from_secs(60)), 1, "{}", a.stderr());
    assert_eq!(fleet.record(&job.id).status, BuildStatus::Failed);
    let stderr = a.stderr();
    assert!(stderr.contains(&format!("started {}", job.id)), "{stderr}");
    assert!(
        stderr.contains(&format!("finished {} FAILED in ", job.id)),
        "{stderr}"
    );
    let mut b = fleet.worker("b", &["--idle-exit", "2s"]);
    assert_eq!(b.wait_exit(Duration::from_secs(15)), 0, "{}", b.stderr());
}

fn uuid_v4() -> String {
    // A v4-shaped uuid from the clock and pid (the tests crate has no uuid dependency).
    let h = format!("{:0>32}", uuid_hex());
    let h = &h[h.len() - 32..];
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[test]
fn a_jobs_source_buildspec_path_variables_and_artifacts_reach_the_build() {
    use buildagent_fleet::job::{Artifacts, EnvironmentVariable, VariableType};
    let fleet = Fleet::new("job", 30);
    let bucket = buildagent_tests::s3_bucket::Bucket::new("fleet-job");
    let spec =
        "version: 0.2\nenv:\n  exported-variables:\n    - OUT\nphases:\n  build:\n    commands:\n\
\x20     - echo \"marker=$(cat marker.txt)\"\n\
\x20     - echo \"plain=$PLAIN secret=$SECRET\"\n\
\x20     - export OUT=done-$PLAIN\n\
artifacts:\n  files:\n    - marker.txt\n";
    let zip = {
        use std::io::Write;
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default();
        w.start_file("ci/spec.yml", options).unwrap();
        w.write_all(spec.as_bytes()).unwrap();
        w.start_file("marker.txt", options).unwrap();
        w.write_all(b"from-the-zip").unwrap();
        w.finish().unwrap();
        out.into_inner()
    };
    bucket
        .runtime
        .block_on(
            bucket
                .client
                .put_object()
                .bucket(&bucket.name)
                .key("src.zip")
                .body(zip.into())
                .send(),
        )
        .unwrap();
    let parameter = format!("/fleet-job/{}", unique());
    let secret = format!("s3cr3t-{}", unique());
    fleet.runtime.block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&fleet.aws.endpoint)
            .region(aws_config::Region::new(fleet.aws.region.clone()))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                &fleet.aws.access_key_id,
                &fleet.aws.secret_access_key,
                None,
                None,
                "test",
            ))
            .load()
            .await;
        aws_sdk_ssm::Client::new(&config)
            .put_parameter()
            .name(&parameter)
            .value(&secret)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .unwrap();
    });
    let mut job = Job::new("job");
    job.source_location_override = Some(format!("s3://{}/src.zip", bucket.name));
    job.buildspec_override = Some("ci/spec.yml".into());
    job.timeout_in_minutes_override = Some(5);
    job.environment_variables_override = vec![
        EnvironmentVariable {
            name: "PLAIN".into(),
            value: "hello".into(),
            kind: VariableType::Plaintext,
        },
        EnvironmentVariable {
            name: "SECRET".into(),
            value: parameter.clone(),
            kind: VariableType::ParameterStore,
        },
    ];
    job.artifacts_override = Some(Artifacts {
        kind: "S3".into(),
        location: Some(bucket.name.clone()),
        path: Some("out".into()),
        namespace_type: Some("BUILD_ID".into()),
        packaging: Some("NONE".into()),
        name: Some("site".into()),
    });
    fleet.submit_job(&job);
    let mut a = fleet.worker("a", &["--once"]);
    assert_eq!(a.wait_exit(Duration::from_secs(60)), 0, "{}", a.stderr());
    let record = fleet.record(&job.id);
    assert_eq!(record.status, BuildStatus::Succeeded, "{record:?}");
    assert_eq!(
        record.exported,
        vec![("OUT".to_string(), "done-hello".to_string())]
    );
    assert_eq!(
        record.artifacts.as_ref().unwrap()["location"],
        format!("arn:aws:s3:::{}/out/{}", bucket.name, job.uuid()).as_str()
    );
    let log = fleet.log("/aws/codebuild/job", job.uuid()).join("");
    assert!(log.contains("marker=from-the-zip"), "{log}");
    assert!(log.contains("plain=hello secret=***"), "{log}");
    assert!(!log.contains(&secret), "the secret is in the log: {log}");
    // The job's artifact name, as the project's: the buildspec names none.
    let key = format!("out/{}/site/marker.txt", job.uuid());
    let object = bucket
        .runtime
        .block_on(
            bucket
                .client
                .get_object()
                .bucket(&bucket.name)
                .key(&key)
                .send(),
        )
        .unwrap_or_else(|e| panic!("{key}: {e:?}"));
    let body = bucket.runtime.block_on(object.body.collect()).unwrap();
    assert_eq!(body.into_bytes().as_ref(), b"from-the-zip");
}

#[test]
fn a_lost_lease_stops_the_build_and_leaves_the_record_to_its_new_owner() {
    let fleet = Fleet::new("lost", 30);
    let a = fleet.worker("a", &[]);
    let pid_file = fleet.marks().join("sleep-pid");
    let job = fleet.submit(
        "lost",
        &[format!(
            "sleep 300 & echo $! > {}; wait",
            pid_file.display()
        )],
    );
    wait_for("the build's sleep", Duration::from_secs(30), || {
        fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
    });
    let sleep: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Another worker took the build over (as a takeover's conditional write would).
    fleet.runtime.block_on(async {
        use aws_sdk_dynamodb::types::AttributeValue;
        fleet
            .records
            .client()
            .update_item()
            .table_name(fleet.records.table())
            .key("id", AttributeValue::S(job.id.clone()))
            .update_expression("SET #w = :other")
            .expression_attribute_names("#w", "worker")
            .expression_attribute_values(":other", AttributeValue::S("elsewhere:1:00000000".into()))
            .send()
            .await
            .unwrap();
    });
    wait_for("the lease loss", Duration::from_secs(20), || {
        a.metric("buildagent_worker_leases_lost_total") == 1.0
            && a.metric("buildagent_worker_builds_running") == 0.0
    });
    assert!(!alive(sleep), "the build's sleep {sleep} outlived it");
    let record = fleet.record(&job.id);
    assert_eq!(record.status, BuildStatus::InProgress, "{record:?}");
    assert_eq!(record.worker.as_deref(), Some("elsewhere:1:00000000"));
    let stderr = a.stderr();
    assert!(
        stderr.contains(&format!("finished {} STOPPED", job.id)) && stderr.contains("lease lost"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_queue_makes_the_worker_unready_then_unhealthy() {
    let fleet = Fleet::new("health", 30);
    let a = fleet.worker("a", &[]);
    assert_eq!(a.get("/healthz"), (200, "ok\n".into()));
    assert_eq!(a.get("/readyz"), (200, "ready\n".into()));
    assert_eq!(a.get("/nothing").0, 404);
    fleet
        .runtime
        .block_on(fleet.sqs.delete_queue().queue_url(fleet.queue.url()).send())
        .unwrap();
    // The long poll in flight ends; the next receive fails.
    wait_for(
        "readyz to say the queue is unreachable",
        Duration::from_secs(30),
        || {
            let (status, body) = a.get("/readyz");
            status == 503 && body.starts_with("queue unreachable: ")
        },
    );
    wait_for(
        "healthz to fail after three failed calls",
        Duration::from_secs(30),
        || a.get("/healthz").0 == 503,
    );
    let (_, body) = a.get("/healthz");
    assert!(body.starts_with("3 queue calls failed in a row"), "{body}");
}

#[test]
fn submit_follow_through_a_real_worker_prints_the_log_and_exits_with_the_status() {
    let fleet = Fleet::new("follow", 30);
    let bucket = buildagent_tests::s3_bucket::Bucket::new("fleet-follow");
    let _a = fleet.worker("a", &["--slots", "2"]);
    for (command, code, status) in [
        ("echo all good", 0, BuildStatus::Succeeded),
        ("echo about to fail; exit 3", 1, BuildStatus::Failed),
    ] {
        let src = fleet.dir.path().join(format!("app-{code}"));
        fs::create_dir_all(&src).unwrap();
        fs::write(
            src.join("buildspec.yml"),
            format!("version: 0.2\nphases:\n  build:\n    commands:\n      - {command}\n"),
        )
        .unwrap();
        fs::write(src.join("data.txt"), "from the submitter\n").unwrap();
        let out = Command::new(binary())
            .args(["submit", "--queue", fleet.queue.url(), "--table"])
            .arg(fleet.records.table())
            .args(["--source-bucket", &bucket.name, "--project", "follow", "-s"])
            .arg(&src)
            .arg("--follow")
            .envs(fleet.aws.env())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = stdout.lines().next().unwrap().to_string();
        assert!(
            stdout.contains(command.split(';').next().unwrap()),
            "{stdout}"
        );
        let record = fleet.record(&id);
        assert_eq!(record.status, status, "{record:?}");
        assert_eq!(record.attempt, 1);
    }
    // The message goes just after the final record.
    wait_for("an empty queue", Duration::from_secs(10), || {
        fleet.queue_depth() == (0, 0)
    });
}

#[test]
fn with_the_docker_executor_a_jobs_image_runs_its_build() {
    let image = services::base_image();
    let fleet = Fleet::new("docker", 30);
    let mut job = Job::new("docker");
    job.image_override = Some(image.clone());
    job.buildspec_override = Some(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - test -f /.dockerenv && echo in-a-container\n"
            .into(),
    );
    fleet.submit_job(&job);
    let mut a = fleet.worker("a", &["--executor", "docker", "--once"]);
    assert_eq!(a.wait_exit(Duration::from_secs(120)), 0, "{}", a.stderr());
    let record = fleet.record(&job.id);
    assert_eq!(record.status, BuildStatus::Succeeded, "{record:?}");
    let log = fleet.log("/aws/codebuild/docker", job.uuid()).join("");
    assert!(log.contains("in-a-container"), "{log}");
}

#[test]
fn the_message_of_a_build_stopped_while_queued_is_dropped_and_never_runs() {
    let fleet = Fleet::new("stopped", 30);
    let job = fleet.submit("stopped", &[mark(&fleet, "ran")]);
    fleet
        .runtime
        .block_on(fleet.records.request_stop(&job.id))
        .unwrap();
    let mut a = fleet.worker("a", &["--idle-exit", "3s"]);
    wait_for("the message to go", Duration::from_secs(20), || {
        fleet.queue_depth() == (0, 0)
    });
    assert_eq!(a.metric("buildagent_worker_duplicates_dropped_total"), 1.0);
    assert_eq!(a.wait_exit(Duration::from_secs(20)), 0, "{}", a.stderr());
    assert_eq!(fleet.record(&job.id).status, BuildStatus::Stopped);
    assert!(!fleet.marks().join(job.uuid()).exists(), "the build ran");
}

/// The pid a build wrote to `path`, once it is there.
fn pid_in(path: &Path) -> i32 {
    wait_for(
        &format!("{}", path.display()),
        Duration::from_secs(30),
        || fs::read_to_string(path).is_ok_and(|t| t.ends_with('\n')),
    );
    fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

#[test]
fn without_cgroups_each_builds_end_removes_only_its_own_daemons() {
    let fleet = Fleet::new("contain", 60);
    let mut worker =
        fleet.worker_with_env("a", &["--slots", "2"], &[("BUILDAGENT_CGROUPS", "off")]);
    assert!(
        worker
            .stderr()
            .contains("known by their CODEBUILD_BUILD_ID"),
        "{}",
        worker.stderr()
    );
    let marks = fleet.marks();
    // Each build leaves a `setsid` daemon and a background job, then waits for its go; build a
    // also leaves a daemon that clears its environment, which no build can claim.
    let build = |name: &str, stray: bool| {
        let m = |file: &str| marks.join(format!("{name}-{file}")).display().to_string();
        let mut commands = vec![
            format!(
                "setsid -f sh -c 'echo $$ > {}; exec sleep 600' </dev/null >/dev/null 2>&1",
                m("daemon")
            ),
            format!("sleep 601 >/dev/null 2>&1 & echo $! > {}", m("job")),
        ];
        if stray {
            commands.push(format!(
                "env -i PATH=\"$PATH\" setsid -f sh -c 'echo $$ > {}; exec sleep 602' \
                 </dev/null >/dev/null 2>&1",
                m("stray")
            ));
        }
        commands.push(format!("while [ ! -e {} ]; do sleep 0.05; done", m("go")));
        fleet.submit("contain", &commands)
    };
    let job_a = build("a", true);
    let job_b = build("b", false);
    let pids = |name: &str| {
        let daemon = pid_in(&marks.join(format!("{name}-daemon")));
        let job = pid_in(&marks.join(format!("{name}-job")));
        (daemon, job)
    };
    let (daemon_a, bg_a) = pids("a");
    let (daemon_b, bg_b) = pids("b");
    let stray = pid_in(&marks.join("a-stray"));
    // Both builds are running, and their daemons were reparented to the worker (a subreaper).
    for daemon in [daemon_a, daemon_b, stray] {
        wait_for("the daemon's reparenting", Duration::from_secs(10), || {
            fs::read_to_string(format!("/proc/{daemon}/stat")).is_ok_and(|stat| {
                stat.rsplit(')').next().unwrap().split(' ').nth(2)
                    == Some(worker.pid().to_string().as_str())
            })
        });
    }

    fs::write(marks.join("a-go"), "").unwrap();
    let record = fleet
        .wait_finished(std::slice::from_ref(&job_a.id), Duration::from_secs(30))
        .remove(0);
    assert_eq!(record.status, BuildStatus::Succeeded, "{record:?}");
    wait_for("a's daemon and job to end", Duration::from_secs(10), || {
        !alive(daemon_a) && !alive(bg_a)
    });
    assert!(
        alive(daemon_b) && alive(bg_b) && alive(stray),
        "a's end ended processes that are not a's"
    );

    fs::write(marks.join("b-go"), "").unwrap();
    let record = fleet
        .wait_finished(std::slice::from_ref(&job_b.id), Duration::from_secs(30))
        .remove(0);
    assert_eq!(record.status, BuildStatus::Succeeded, "{record:?}");
    wait_for("b's daemon and job to end", Duration::from_secs(10), || {
        !alive(daemon_b) && !alive(bg_b)
    });
    assert!(alive(stray), "b's end ended a daemon that is not b's");

    // The unclaimed daemon ends with the worker, which names it. (A second signal, with no
    // build running, only saves waiting for the long poll in flight.)
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    worker.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(worker.wait_exit(Duration::from_secs(30)), 0);
    assert!(
        !alive(stray),
        "the unclaimed daemon {stray} outlived the worker"
    );
    assert!(
        worker.stderr().contains(&format!(
            "ended a daemon no build claimed: {stray} (sleep 602)"
        )),
        "{}",
        worker.stderr()
    );
}
