//! Log sinks (`--cloudwatch-logs`, `--s3-logs`) and `buildagent logs`, against moto's CloudWatch
//! Logs and S3 on loopback, with the fault proxy in front of moto where the service must be
//! slow, throttling or down. Everything read back is read with the AWS SDK, independently of
//! the agent (and once with `buildagent logs`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use buildagent_tests::fault_proxy::{Fault, FaultProxy, Until};
use buildagent_tests::services::{self, Aws};
use buildagent_tests::{Run, Sandbox};

/// An SDK client for moto's CloudWatch Logs and S3.
struct Moto {
    aws: Aws,
    logs: aws_sdk_cloudwatchlogs::Client,
    s3: aws_sdk_s3::Client,
    runtime: tokio::runtime::Runtime,
}

impl Moto {
    fn new() -> Moto {
        let aws = services::aws();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let credentials = aws_sdk_cloudwatchlogs::config::Credentials::new(
            &aws.access_key_id,
            &aws.secret_access_key,
            None,
            None,
            "test",
        );
        let logs = aws_sdk_cloudwatchlogs::Client::from_conf(
            aws_sdk_cloudwatchlogs::Config::builder()
                .behavior_version(aws_sdk_cloudwatchlogs::config::BehaviorVersion::latest())
                .endpoint_url(&aws.endpoint)
                .region(aws_sdk_cloudwatchlogs::config::Region::new(
                    aws.region.clone(),
                ))
                .credentials_provider(credentials.clone())
                .build(),
        );
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .endpoint_url(&aws.endpoint)
                .region(aws_sdk_s3::config::Region::new(aws.region.clone()))
                .credentials_provider(credentials)
                .force_path_style(true)
                .build(),
        );
        Moto {
            aws,
            logs,
            s3,
            runtime,
        }
    }

    /// Every event of the stream, in order: (timestamp, message).
    fn events(&self, group: &str, stream: &str) -> Vec<(i64, String)> {
        self.runtime.block_on(async {
            let mut events = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let out = self
                    .logs
                    .get_log_events()
                    .log_group_name(group)
                    .log_stream_name(stream)
                    .start_from_head(true)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .expect("get log events");
                if out.events().is_empty() {
                    return events;
                }
                events.extend(out.events().iter().map(|e| {
                    (
                        e.timestamp().unwrap_or(0),
                        e.message().unwrap_or("").to_string(),
                    )
                }));
                let next = out.next_forward_token().map(str::to_string);
                if next.is_none() || next == token {
                    return events;
                }
                token = next;
            }
        })
    }

    fn bucket(&self, test: &str) -> String {
        let name = format!("{test}-{}", unique());
        self.runtime
            .block_on(self.s3.create_bucket().bucket(&name).send())
            .expect("create a bucket");
        name
    }

    fn object(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.runtime.block_on(async {
            let out = self
                .s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("get s3://{bucket}/{key}: {e:?}"));
            out.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }
}

fn unique() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_string()
}

/// A buildspec running `commands` (each a YAML scalar) in BUILD.
fn buildspec(sandbox: &Sandbox, commands: &[&str]) {
    let mut yaml = String::from("version: 0.2\nphases:\n  build:\n    commands:\n");
    for c in commands {
        yaml.push_str(&format!("      - {c}\n"));
    }
    sandbox.write("buildspec.yml", yaml);
}

/// `buildagent run` in the sandbox with moto's variables and `extra` ones.
fn run(sandbox: &Sandbox, moto: &Moto, args: &[&str], extra: &[(&str, &str)]) -> Run {
    let mut cmd = sandbox.command(["run", "--no-cache"].iter().chain(args));
    cmd.envs(moto.aws.env());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Run::from(cmd.output().expect("run buildagent"))
}

/// The group and stream of a test.
fn names(test: &str) -> (String, String) {
    (
        format!("/buildagent/test/{test}"),
        format!("s-{}", unique()),
    )
}

#[test]
fn the_whole_log_arrives_line_for_line_and_masked() {
    let moto = Moto::new();
    let sandbox = Sandbox::new();
    let (group, stream) = names("whole");
    buildspec(
        &sandbox,
        &[
            "echo hello",
            "echo \"token is $TOKEN\"",
            "printf 'no newline at the end'",
            "printf 'h\\303\\251llo\\nsecond line\\n'",
            // One line of 600,000 bytes: three events of at most 256 KiB.
            "head -c 600000 /dev/zero | tr '\\0' x; echo",
            "echo done >&2",
        ],
    );
    let target = format!("{group}:{stream}");
    let result = run(
        &sandbox,
        &moto,
        &[
            "--cloudwatch-logs",
            &target,
            "--secret",
            "TOKEN=s3cr3t-Value-42",
            "--log-file",
            "build.log",
        ],
        &[],
    );
    result.expect_code(0);
    let file = std::fs::read_to_string(sandbox.path().join("build.log")).unwrap();
    assert!(file.contains("token is ***"), "{file}");
    let events = moto.events(&group, &stream);
    let sent: String = events.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(sent, file, "the stream holds exactly the log file");
    assert!(!sent.contains("s3cr3t"));
    // One event per line; only the long line is in pieces.
    for (_, message) in &events {
        assert!(message.len() <= 256 * 1024 - 26);
        let body = message.strip_suffix('\n').unwrap_or(message);
        assert!(!body.contains('\n'), "{message:?}");
    }
    let long: Vec<&(i64, String)> = events
        .iter()
        .filter(|(_, m)| m.starts_with("xxx"))
        .collect();
    assert_eq!(long.len(), 3);
    assert_eq!(file.lines().count() + 2, events.len());
    let times: Vec<i64> = events.iter().map(|(t, _)| *t).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
    // Where the log went: a line in the log, and the summary line on stdout.
    assert!(
        file.contains(&format!(
            "Logs streamed to CloudWatch Logs group {group} stream {stream}: https://{}.console.aws.amazon.com/cloudwatch/home?region={}#logsV2:log-groups/log-group/$252Fbuildagent$252Ftest$252Fwhole/log-events/{stream}\n",
            moto.aws.region, moto.aws.region
        )),
        "{file}"
    );
    // `buildagent logs` prints it back the same.
    let back = sandbox
        .command(["logs", &target])
        .envs(moto.aws.env())
        .output()
        .unwrap();
    let back = Run::from(back);
    back.expect_code(0);
    assert_eq!(back.stdout, file);
}

#[test]
fn the_default_stream_is_the_build_uuid_and_json_says_where_the_log_went() {
    let moto = Moto::new();
    let sandbox = Sandbox::new();
    let (group, _) = names("default-stream");
    buildspec(&sandbox, &["echo one"]);
    let result = run(
        &sandbox,
        &moto,
        &["--cloudwatch-logs", &group, "--log-format", "json"],
        &[],
    );
    result.expect_code(0);
    let events: Vec<serde_json::Value> = result
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let build_id = events[0]["build_id"].as_str().unwrap();
    let uuid = build_id.rsplit(':').next().unwrap();
    let logs = events
        .iter()
        .find(|e| e["type"] == "logs")
        .expect("a logs event");
    assert_eq!(events[1]["type"], "logs", "right after the start");
    assert_eq!(logs["cloudwatch"]["group"], group.as_str());
    assert_eq!(logs["cloudwatch"]["stream"], uuid);
    assert_eq!(logs["s3"], serde_json::Value::Null);
    let sent = moto.events(&group, uuid);
    assert!(sent.iter().any(|(_, m)| m == "one\n"), "{sent:?}");
    assert!(!events.iter().any(|e| e["type"] == "logs_undelivered"));
}

#[test]
fn two_hundred_thousand_lines_arrive_in_batches_within_the_limits() {
    let moto = Moto::new();
    let sandbox = Sandbox::new();
    let (group, stream) = names("many");
    buildspec(&sandbox, &["seq 1 200000"]);
    let record = sandbox.path().join("batches.txt");
    let target = format!("{group}:{stream}");
    let result = run(
        &sandbox,
        &moto,
        &["--cloudwatch-logs", &target, "--log-flush-timeout", "5m"],
        &[("BUILDAGENT_TEST_CWL_BATCHES", record.to_str().unwrap())],
    );
    result.expect_code(0);
    let events = moto.events(&group, &stream);
    let numbers: Vec<&str> = events
        .iter()
        .map(|(_, m)| m.as_str())
        .filter(|m| !m.starts_with("[Container]") && *m != "\n")
        .collect();
    assert_eq!(numbers.len(), 200_000);
    for (i, m) in numbers.iter().enumerate() {
        assert_eq!(*m, format!("{}\n", i + 1));
    }
    // What the agent sent, batch by batch.
    let batches: Vec<Vec<i64>> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(|n| n.parse().unwrap()).collect())
        .collect();
    let total: i64 = batches.iter().map(|b| b[0]).sum();
    assert_eq!(total as usize, events.len());
    for b in &batches {
        assert!(b[0] <= 10_000, "{b:?}");
        assert!(b[1] <= 1_048_576, "{b:?}");
        assert!(b[3] - b[2] < 24 * 3600 * 1000, "{b:?}");
    }
    // Full batches: the count limit is what cuts short lines.
    assert!(
        batches.iter().filter(|b| b[0] == 10_000).count() >= 10,
        "{batches:?}"
    );
    let sent_bytes: i64 = events.iter().map(|(_, m)| m.len() as i64 + 26).sum();
    assert_eq!(batches.iter().map(|b| b[1]).sum::<i64>(), sent_bytes);
}

#[test]
fn throttling_then_refused_connections_lose_nothing_and_do_not_hold_the_build() {
    let moto = Moto::new();
    let sandbox = Sandbox::new();
    let (group, stream) = names("faults");
    let proxy = FaultProxy::start(
        &moto.aws.endpoint,
        vec![
            (
                Fault::aws_json_error(400, "ThrottlingException", "Rate exceeded"),
                Until::Elapsed(Duration::from_secs(3)),
            ),
            (
                Fault::aws_json_error(503, "ServiceUnavailableException", "try later"),
                Until::Requests(2),
            ),
            (Fault::Refuse, Until::Elapsed(Duration::from_secs(3))),
            (Fault::Drop, Until::Requests(1)),
        ],
    );
    // 20 MB in 1,000-byte lines while the service is away: more than the 8 MiB kept in memory.
    buildspec(
        &sandbox,
        &[
            "head -c 15000000 /dev/urandom | base64 -w 1000",
            "echo last line",
        ],
    );
    let target = format!("{group}:{stream}");
    let result = run(
        &sandbox,
        &moto,
        &[
            "--cloudwatch-logs",
            &target,
            "--log-file",
            "build.log",
            "--log-format",
            "json",
            "--log-flush-timeout",
            "5m",
        ],
        // Only CloudWatch Logs goes through the proxy: the per-service endpoint setting.
        &[("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", &proxy.url())],
    );
    result.expect_code(0);
    let stats = proxy.stats();
    assert!(stats.answered >= 3, "{stats:?}");
    assert!(
        stats.refusals >= 1 && stats.dropped >= 1 && stats.passed > 0,
        "{stats:?}"
    );
    let file = std::fs::read_to_string(sandbox.path().join("build.log")).unwrap();
    let sent: String = moto
        .events(&group, &stream)
        .iter()
        .map(|(_, m)| m.as_str())
        .collect();
    assert_eq!(sent.len(), file.len());
    assert_eq!(sent, file, "nothing lost, nothing twice");
    // The build's commands ended while the service was still away: they did not wait for it.
    let build_done = result
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["type"] == "phase_finished" && e["phase"] == "BUILD")
        .expect("BUILD finished");
    let at = build_done["at"].as_str().unwrap().to_string();
    let faults_ended = proxy.faults_ended_at().expect("the faults ended");
    let ended = rfc3339(faults_ended);
    assert!(at < ended, "BUILD ended at {at}, the faults at {ended}");
    assert!(!result.stdout.contains("logs_undelivered"));
}

#[test]
fn an_older_endpoints_sequence_token_and_already_accepted_answers_lose_nothing_and_add_nothing() {
    let moto = Moto::new();
    let sandbox = Sandbox::new();
    let (group, stream) = names("tokens");
    // Only PutLogEvents sees the faults, one request each: the first batch passes; the second
    // is refused for its sequence token (and sent again with the one expected); that one
    // reaches moto but its answer is lost, so it is sent a third time and the endpoint says
    // it already has it. Moto ignores sequence tokens, as the current service does.
    let proxy = FaultProxy::start_matching(
        &moto.aws.endpoint,
        Some("PutLogEvents"),
        vec![
            (Fault::Pass, Until::Requests(1)),
            (
                Fault::aws_json(
                    400,
                    r#"{"__type":"InvalidSequenceTokenException","message":"The given sequenceToken is invalid. The next expected sequenceToken is: 49039859","expectedSequenceToken":"49039859"}"#,
                ),
                Until::Requests(1),
            ),
            (Fault::LoseAnswer, Until::Requests(1)),
            (
                Fault::aws_json(
                    400,
                    r#"{"__type":"DataAlreadyAcceptedException","message":"The given batch of log events has already been accepted. The next batch can be sent with sequenceToken: 49039860","expectedSequenceToken":"49039860"}"#,
                ),
                Until::Requests(1),
            ),
        ],
    );
    // 30,000 lines: at least three batches of 10,000 events.
    buildspec(&sandbox, &["seq 1 30000", "echo last line"]);
    let target = format!("{group}:{stream}");
    let record = sandbox.path().join("batches.txt");
    let result = run(
        &sandbox,
        &moto,
        &[
            "--cloudwatch-logs",
            &target,
            "--log-file",
            "build.log",
            "--log-format",
            "json",
            "--log-flush-timeout",
            "5m",
        ],
        &[
            ("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", &proxy.url()),
            ("BUILDAGENT_TEST_CWL_BATCHES", record.to_str().unwrap()),
        ],
    );
    result.expect_code(0);
    let stats = proxy.stats();
    assert!(proxy.faults_over(), "{stats:?}");
    assert_eq!((stats.answered, stats.lost_answers), (2, 1), "{stats:?}");
    let file = std::fs::read_to_string(sandbox.path().join("build.log")).unwrap();
    let events = moto.events(&group, &stream);
    let sent: String = events.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(sent.len(), file.len(), "nothing lost, nothing twice");
    assert_eq!(sent, file);
    assert!(!result.stdout.contains("logs_undelivered"));
    // Each batch counted once as accepted, the one the endpoint already had included.
    let recorded: i64 = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(recorded as usize, events.len());
}

/// RFC 3339 with microseconds in UTC, as events write `at` (comparable as strings).
fn rfc3339(t: SystemTime) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()),
            "+%Y-%m-%dT%H:%M:%S.%6NZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn an_unreachable_endpoint_does_not_fail_the_build_and_the_warning_counts_the_lines() {
    let moto = Moto::new();
    let sandbox = Sandbox::new();
    buildspec(&sandbox, &["echo one", "echo two"]);
    // Nothing listens on port 9 of loopback (discard is not run here): connections are refused.
    let result = run(
        &sandbox,
        &moto,
        &[
            "--cloudwatch-logs",
            "/buildagent/test/unreachable",
            "--log-flush-timeout",
            "2s",
            "--log-file",
            "build.log",
        ],
        &[("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", "http://127.0.0.1:9")],
    );
    result.expect_code(0);
    let file = std::fs::read_to_string(sandbox.path().join("build.log")).unwrap();
    // Every line before the warning was for the sink, and none arrived.
    let warning_at = file
        .lines()
        .position(|l| l.contains("Warning: ") && l.contains("log line(s) were not delivered"))
        .unwrap_or_else(|| panic!("no warning in\n{file}"));
    let warning = file.lines().nth(warning_at).unwrap();
    assert!(
        warning.contains(&format!(
            "Warning: {warning_at} log line(s) were not delivered to CloudWatch Logs group /buildagent/test/unreachable stream "
        )),
        "{warning}"
    );
    assert!(warning.contains("(0 were)"), "{warning}");
    assert!(result.stdout.contains(warning), "the terminal shows it too");
}

#[test]
fn the_s3_object_is_the_whole_log_gzipped() {
    let moto = Moto::new();
    let sandbox = Sandbox::new();
    let bucket = moto.bucket("logs");
    buildspec(&sandbox, &["echo \"secret $TOKEN\"", "seq 1 1000"]);
    let result = run(
        &sandbox,
        &moto,
        &[
            "--s3-logs",
            &format!("s3://{bucket}/builds/logs"),
            "--secret",
            "TOKEN=hidden-value-9",
            "--log-file",
            "build.log",
            "--log-format",
            "json",
        ],
        &[],
    );
    result.expect_code(0);
    let uuid = first_build_uuid(&result.stdout);
    let gz = moto.object(&bucket, &format!("builds/logs/{uuid}.gz"));
    let text = gunzip(&sandbox, &gz);
    let file = std::fs::read_to_string(sandbox.path().join("build.log")).unwrap();
    assert_eq!(text, file);
    assert!(!text.contains("hidden-value-9"));
    assert!(text.contains("secret ***\n"));
    assert!(result
        .stdout
        .contains(&format!("\"s3\":\"s3://{bucket}/builds/logs/{uuid}.gz\"")));
}

#[test]
fn streamed_s3_logs_are_uploaded_in_parts_while_the_build_runs() {
    let moto = Moto::new();
    let sandbox = Sandbox::new();
    let bucket = moto.bucket("logs-stream");
    // About 27 MB of base64, about 20 MB compressed: parts of 8 MiB go while it runs.
    buildspec(&sandbox, &["head -c 20000000 /dev/urandom | base64 -w 200"]);
    let result = run(
        &sandbox,
        &moto,
        &[
            "--s3-logs",
            &format!("s3://{bucket}"),
            "--s3-logs-stream",
            "--log-file",
            "build.log",
            "--log-format",
            "json",
        ],
        &[],
    );
    result.expect_code(0);
    let uuid = first_build_uuid(&result.stdout);
    let text = gunzip(&sandbox, &moto.object(&bucket, &format!("{uuid}.gz")));
    let file = std::fs::read_to_string(sandbox.path().join("build.log")).unwrap();
    assert_eq!(text.len(), file.len());
    assert!(text == file);
    // A multipart object's ETag ends in `-<parts>`.
    let etag = moto.runtime.block_on(async {
        moto.s3
            .head_object()
            .bucket(&bucket)
            .key(format!("{uuid}.gz"))
            .send()
            .await
            .unwrap()
            .e_tag()
            .unwrap_or_default()
            .to_string()
    });
    let parts: u32 = etag
        .trim_matches('"')
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(1);
    assert!(parts >= 2, "{etag}");
}

fn first_build_uuid(json_lines: &str) -> String {
    let first: serde_json::Value =
        serde_json::from_str(json_lines.lines().next().unwrap()).unwrap();
    first["build_id"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string()
}

/// Decompresses with the system's gzip (independent of the agent's encoder).
fn gunzip(sandbox: &Sandbox, gz: &[u8]) -> String {
    let path = sandbox.write("log.gz", gz);
    let out = Command::new("gzip").arg("-dc").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn logs_follow_prints_a_running_build_as_it_goes() {
    let moto = Moto::new();
    let sandbox = Sandbox::new();
    let (group, stream) = names("follow");
    let marker = sandbox.path().join("go-on");
    buildspec(
        &sandbox,
        &[
            "echo first-line",
            &format!(
                "for i in $(seq 1 1200); do [ -f {} ] && break; sleep 0.05; done; echo second-line",
                marker.display()
            ),
        ],
    );
    let target = format!("{group}:{stream}");
    let mut build = sandbox.command(["run", "--no-cache", "--cloudwatch-logs", &target]);
    build
        .envs(moto.aws.env())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut build = build.spawn().unwrap();
    let mut follow = sandbox.command(["logs", "-f", &target]);
    follow.envs(moto.aws.env()).stdout(Stdio::piped());
    let mut follow = follow.spawn().unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line == "first-line" {
            break;
        }
    }
    assert_eq!(seen.last().map(String::as_str), Some("first-line"));
    // The build waits for this: the follower printed its first line while it ran.
    assert!(
        build.try_wait().unwrap().is_none(),
        "the build is still running"
    );
    std::fs::write(&marker, "").unwrap();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "second-line" {
            seen.push(line);
            break;
        }
    }
    assert_eq!(seen.last().map(String::as_str), Some("second-line"));
    assert!(build.wait().unwrap().success());
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn a_build_keeping_its_cpu_busy_gets_one_batch_a_second_and_the_rest_after() {
    let moto = Moto::new();
    let sandbox = Sandbox::new();
    let (group, stream) = names("paced");
    // The agent and the build on one CPU, kept busy by a loop of the build's own while it prints
    // 600,000 lines (60 full batches) over about 3 seconds.
    buildspec(
        &sandbox,
        &["sh -c 'while true; do true; done' & b=$!; for i in $(seq 1 30); do seq 1 20000; sleep 0.1; done; kill $b"],
    );
    let record = sandbox.path().join("batches.txt");
    let target = format!("{group}:{stream}");
    let mut cmd = sandbox.command([
        "run",
        "--no-cache",
        "--cloudwatch-logs",
        &target,
        "--log-flush-timeout",
        "5m",
    ]);
    cmd.envs(moto.aws.env())
        .env("BUILDAGENT_TEST_CWL_BATCHES", &record);
    let ours = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    let cpu = (0..nix::sched::CpuSet::count())
        .find(|&c| ours.is_set(c).unwrap_or(false))
        .unwrap();
    let mut one = nix::sched::CpuSet::new();
    one.set(cpu).unwrap();
    // SAFETY: sched_setaffinity is async-signal-safe; `one` is a plain value copied in.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one)
                .map_err(std::io::Error::from)
        });
    }
    Run::from(cmd.output().expect("run buildagent")).expect_code(0);
    // Nothing lost: every line arrived once the build was over.
    let events = moto.events(&group, &stream);
    let numbers = events
        .iter()
        .filter(|(_, m)| m.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .count();
    assert_eq!(numbers, 600_000);
    // While the build ran (until its last line was read), one batch a second: the first at once,
    // maybe a few in the first window before the CPU was measured busy, then one per second.
    let batches: Vec<Vec<i64>> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(|n| n.parse().unwrap()).collect())
        .collect();
    let started = batches.iter().map(|b| b[2]).min().unwrap();
    let ended = batches.iter().map(|b| b[3]).max().unwrap();
    let during: Vec<i64> = batches
        .iter()
        .map(|b| b[4])
        .filter(|&at| at < ended)
        .collect();
    let seconds = (ended - started) as f64 / 1000.0;
    assert!(seconds >= 2.0, "the build ran {seconds} s");
    assert!(
        (during.len() as f64) <= seconds + 4.0,
        "{} batches in {seconds} s of build: {batches:?}",
        during.len()
    );
    // The log stayed live meanwhile, and most of it went after the build.
    assert!(
        during.len() as f64 >= seconds / 3.0,
        "{} batches in {seconds} s of build: {batches:?}",
        during.len()
    );
    assert!(batches.len() - during.len() >= 30, "{batches:?}");
}
