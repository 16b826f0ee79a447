//! The fleet's client commands against moto (SQS, DynamoDB, S3, CloudWatch Logs): `fleet init`,
//! `submit`, `status`, `stop`, `list`, `logs ID`, `schema --job`, and their bad input. The test
//! plays the worker where one is needed (claiming the record, writing log events, finishing it)
//! with the SDK and the fleet library: a real moto, no mock.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::QueueAttributeName;
use buildagent_fleet::job::Job;
use buildagent_fleet::record::{BuildStatus, Finish, LogsRecord, RecordStore};
use buildagent_tests::services::{self, Aws};
use buildagent_tests::{Run, Sandbox};
use serde_json::Value;

/// One fleet's resources (named after the test) and SDK clients to look at them.
struct Fleet {
    name: String,
    aws: Aws,
    sandbox: Sandbox,
    runtime: tokio::runtime::Runtime,
    sqs: aws_sdk_sqs::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
}

impl Fleet {
    /// Names only; nothing is created until `init`.
    fn new(test: &str) -> Fleet {
        let aws = services::aws();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "{test}-{}-{}",
            std::process::id(),
            nanos % 1_000_000_000_000
        );
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .endpoint_url(&aws.endpoint)
            .region(aws_config::Region::new(aws.region.clone()))
            .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(
                aws_sdk_sqs::config::Credentials::new(
                    &aws.access_key_id,
                    &aws.secret_access_key,
                    None,
                    None,
                    "test",
                ),
            ))
            .build();
        Fleet {
            sqs: aws_sdk_sqs::Client::new(&config),
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&config)
                    .force_path_style(true)
                    .build(),
            ),
            logs: aws_sdk_cloudwatchlogs::Client::new(&config),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            sandbox: Sandbox::new(),
            aws,
            name,
        }
    }

    /// `buildagent ARGS` in the sandbox with moto's variables and no fleet variables.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.sandbox.command(args);
        cmd.envs(self.aws.env())
            .env_remove("BUILDAGENT_QUEUE")
            .env_remove("BUILDAGENT_TABLE");
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run buildagent"))
    }

    /// `fleet init` of this fleet's queue, table and bucket.
    fn init(&self) -> Run {
        self.run(&[
            "fleet", "init", "--queue", &self.name, "--table", &self.name, "--bucket", &self.name,
        ])
    }

    /// A project directory `dir` with a buildspec, in the sandbox.
    fn project(&self, dir: &str) {
        self.sandbox.write(
            &format!("{dir}/buildspec.yml"),
            "version: 0.2\nphases:\n  build:\n    commands:\n      - echo hello\n",
        );
        self.sandbox.write(&format!("{dir}/src/main.txt"), "main\n");
    }

    /// `submit -s DIR` of a project directory; the build id.
    fn submit(&self, dir: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "submit",
            "--queue",
            &self.name,
            "--table",
            &self.name,
            "--source-bucket",
            &self.name,
            "-s",
            dir,
        ];
        args.extend_from_slice(extra);
        let run = self.run(&args);
        run.expect_code(0);
        let id = run.stdout.trim().to_string();
        assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
        id
    }

    fn status_json(&self, ids: &[&str]) -> (Value, Run) {
        let mut args = vec!["status", "--table", &self.name, "--format", "json"];
        args.extend_from_slice(ids);
        let run = self.run(&args);
        let value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("status JSON: {e}\n{}\n{}", run.stdout, run.stderr));
        (value, run)
    }

    /// Every attribute of the queue at `url`, as SQS reports them.
    fn queue_attributes(&self, url: &str) -> std::collections::HashMap<QueueAttributeName, String> {
        self.runtime
            .block_on(
                self.sqs
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::All)
                    .send(),
            )
            .unwrap()
            .attributes
            .unwrap_or_default()
    }

    fn queue_url(&self) -> String {
        self.runtime
            .block_on(self.sqs.get_queue_url().queue_name(&self.name).send())
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string()
    }

    /// The messages on the queue (received, then made visible again).
    fn messages(&self) -> Vec<String> {
        let url = self.queue_url();
        let out = self
            .runtime
            .block_on(
                self.sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send(),
            )
            .unwrap();
        for m in out.messages() {
            self.runtime
                .block_on(
                    self.sqs
                        .change_message_visibility()
                        .queue_url(&url)
                        .receipt_handle(m.receipt_handle().unwrap())
                        .visibility_timeout(0)
                        .send(),
                )
                .unwrap();
        }
        out.messages()
            .iter()
            .map(|m| m.body().unwrap().to_string())
            .collect()
    }

    fn store(&self) -> RecordStore {
        RecordStore::new(self.dynamodb.clone(), self.name.clone())
    }
}

fn uuid_of(id: &str) -> &str {
    id.split_once(':').unwrap().1
}

#[test]
fn fleet_init_twice_is_idempotent_with_the_dead_letter_redrive() {
    let fleet = Fleet::new("fleet-init");
    let first = fleet.init();
    first.expect_code(0);
    assert_eq!(
        first.stderr.matches("created ").count(),
        4,
        "{}",
        first.stderr
    );
    let url = fleet.queue_url();
    assert!(
        first.stdout.contains(&format!("queue: {url}\n")),
        "{}",
        first.stdout
    );
    assert!(first
        .stdout
        .contains(&format!("dead-letter queue: {url}-dlq")));
    assert!(first.stdout.contains(&format!("table: {}\n", fleet.name)));
    assert!(first.stdout.contains(&format!("bucket: {}\n", fleet.name)));
    assert!(first.stdout.contains(&format!(
        "worker: buildagent worker --queue {url} --table {}",
        fleet.name
    )));
    assert!(first.stdout.contains(&format!(
        "submit: buildagent submit --queue {url} --table {} --source-bucket {}",
        fleet.name, fleet.name
    )));

    let second = fleet.init();
    second.expect_code(0);
    assert_eq!(
        second.stderr.matches("kept ").count(),
        4,
        "{}",
        second.stderr
    );
    assert!(!second.stderr.contains("created "));
    assert_eq!(second.stdout, first.stdout);

    let attributes = fleet.queue_attributes(&url);
    assert_eq!(attributes[&QueueAttributeName::VisibilityTimeout], "300");
    let redrive: Value =
        serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert!(redrive["deadLetterTargetArn"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":{}-dlq", fleet.name)));
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "3"
    );
    fleet
        .runtime
        .block_on(
            fleet
                .dynamodb
                .describe_table()
                .table_name(&fleet.name)
                .send(),
        )
        .unwrap();
    fleet
        .runtime
        .block_on(fleet.s3.head_bucket().bucket(&fleet.name).send())
        .unwrap();

    // Other settings on a later run update the queue.
    fleet
        .run(&[
            "fleet",
            "init",
            "--queue",
            &fleet.name,
            "--table",
            &fleet.name,
            "--bucket",
            &fleet.name,
            "--visibility-timeout",
            "90s",
            "--max-receive-count",
            "5",
        ])
        .expect_code(0);
    let attributes = fleet.queue_attributes(&url);
    assert_eq!(attributes[&QueueAttributeName::VisibilityTimeout], "90");
    assert!(attributes[&QueueAttributeName::RedrivePolicy].contains('5'));
}

#[test]
fn submit_uploads_the_source_records_it_queued_and_sends_the_job() {
    let fleet = Fleet::new("fleet-submit");
    fleet.init().expect_code(0);
    fleet.project("myapp");
    let id = fleet.submit("myapp", &["--env-var", "A=1", "--timeout", "10m"]);
    assert!(id.starts_with("myapp:"), "{id}");
    uuid_of(&id).parse::<String>().unwrap();

    // The zip, with the project's files.
    let key = format!("sources/{}.zip", uuid_of(&id));
    let object = fleet
        .runtime
        .block_on(fleet.s3.get_object().bucket(&fleet.name).key(&key).send())
        .unwrap_or_else(|e| panic!("s3://{}/{key}: {e:?}", fleet.name));
    let bytes = fleet
        .runtime
        .block_on(object.body.collect())
        .unwrap()
        .into_bytes();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["buildspec.yml", "src/main.txt"]);
    let mut text = String::new();
    zip.by_name("src/main.txt")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "main\n");

    // The record.
    let (json, run) = fleet.status_json(&[&id]);
    run.expect_code(0);
    let build = &json["builds"][0];
    assert_eq!(build["id"], id.as_str());
    assert_eq!(build["buildStatus"], "QUEUED");
    assert_eq!(build["buildNumber"], 1);
    assert_eq!(build["projectName"], "myapp");
    let zip_url = format!("s3://{}/{key}", fleet.name);
    assert_eq!(build["source"]["location"], zip_url.as_str());
    assert_eq!(build["timeoutInMinutes"], 10);

    // The message is the job.
    let messages = fleet.messages();
    assert_eq!(messages.len(), 1);
    let job = Job::parse(&messages[0]).unwrap();
    assert!(job.warnings.is_empty(), "{:?}", job.warnings);
    assert_eq!(job.job.id, id);
    assert_eq!(job.job.project_name, "myapp");
    assert_eq!(
        job.job.source_location_override.as_deref(),
        Some(zip_url.as_str())
    );
    assert_eq!(job.job.timeout_in_minutes_override, Some(10));
    assert_eq!(job.job.environment_variables_override[0].name, "A");

    // The next build of the project is number 2; an inline buildspec travels in the job.
    fleet.sandbox.write(
        "ci.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo ci\n",
    );
    let second = fleet.submit("myapp", &["-b", "ci.yml"]);
    let (json, _) = fleet.status_json(&[&second]);
    assert_eq!(json["builds"][0]["buildNumber"], 2);
    let bodies = fleet.messages();
    let job = bodies
        .iter()
        .map(|b| Job::parse(b).unwrap().job)
        .find(|j| j.id == second)
        .unwrap();
    assert!(job.inline_buildspec().unwrap().contains("echo ci"));

    // A secondary directory is uploaded too; a Git URL travels without its credentials.
    fleet.sandbox.write("lib/lib.txt", "lib\n");
    let third = fleet.submit("myapp", &["-s", "LIB:lib"]);
    let fourth = Run::from(
        fleet
            .command(&[
                "submit",
                "--queue",
                &fleet.name,
                "--table",
                &fleet.name,
                "-s",
                "https://user:s3cret@git.example.com/org/tool.git",
            ])
            .output()
            .unwrap(),
    );
    fourth.expect_code(0);
    let fourth = fourth.stdout.trim().to_string();
    assert!(fourth.starts_with("tool:"), "{fourth}");
    let jobs: Vec<Job> = fleet
        .messages()
        .iter()
        .map(|b| Job::parse(b).unwrap().job)
        .collect();
    let job = jobs.iter().find(|j| j.id == third).unwrap();
    let lib_key = format!("sources/{}-LIB.zip", uuid_of(&third));
    assert_eq!(job.secondary_sources_override[0].source_identifier, "LIB");
    assert_eq!(
        job.secondary_sources_override[0].location,
        format!("s3://{}/{lib_key}", fleet.name)
    );
    fleet
        .runtime
        .block_on(
            fleet
                .s3
                .head_object()
                .bucket(&fleet.name)
                .key(&lib_key)
                .send(),
        )
        .unwrap();
    let job = jobs.iter().find(|j| j.id == fourth).unwrap();
    assert_eq!(
        job.source_location_override.as_deref(),
        Some("https://git.example.com/org/tool.git")
    );
    assert!(!fleet.messages().iter().any(|b| b.contains("s3cret")));
}

#[test]
fn status_is_a_table_or_batch_get_builds_json() {
    let fleet = Fleet::new("fleet-status");
    fleet.init().expect_code(0);
    fleet.project("app");
    let id = fleet.submit("app", &[]);

    let table = fleet.run(&["status", "--table", &fleet.name, &id]);
    table.expect_code(0);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("ID "), "{}", table.stdout);
    assert!(
        lines[1].starts_with(&id) && lines[1].contains(" QUEUED "),
        "{}",
        table.stdout
    );

    let missing = "app:00000000-0000-4000-8000-000000000000";
    let (json, run) = fleet.status_json(&[&id, missing]);
    run.expect_code(1);
    assert_eq!(json["builds"].as_array().unwrap().len(), 1);
    assert_eq!(json["buildsNotFound"], serde_json::json!([missing]));
    let build = &json["builds"][0];
    for field in [
        "id",
        "arn",
        "buildNumber",
        "buildStatus",
        "currentPhase",
        "phases",
        "logs",
        "artifacts",
        "exportedEnvironmentVariables",
        "startTime",
    ] {
        assert!(build.get(field).is_some(), "no {field} in {build}");
    }
    assert_eq!(
        build["arn"],
        format!(
            "arn:aws:codebuild:{}:000000000000:build/{id}",
            fleet.aws.region
        )
    );
    assert_eq!(build["phases"][0]["phaseType"], "SUBMITTED");

    let table = fleet.run(&["status", "--table", &fleet.name, &id, missing]);
    table.expect_code(1);
    assert!(table
        .stderr
        .contains(&format!("no build `{missing}` in table {}", fleet.name)));

    // BUILDAGENT_TABLE stands for --table.
    let run = Run::from(
        fleet
            .command(&["status", &id])
            .env("BUILDAGENT_TABLE", &fleet.name)
            .output()
            .unwrap(),
    );
    run.expect_code(0);
    assert!(run.stdout.contains(&id));
}

#[test]
fn stop_of_a_queued_build_stops_it_at_once() {
    let fleet = Fleet::new("fleet-stop");
    fleet.init().expect_code(0);
    fleet.project("app");
    let id = fleet.submit("app", &[]);
    let stop = fleet.run(&["stop", "--table", &fleet.name, &id]);
    stop.expect_code(0);
    assert_eq!(stop.stdout, format!("{id}: STOPPED (it was queued)\n"));
    let (json, _) = fleet.status_json(&[&id]);
    let build = &json["builds"][0];
    assert_eq!(build["buildStatus"], "STOPPED");
    assert_eq!(build["buildComplete"], true);
    assert_eq!(build["buildagent"]["statusReason"], "stopped by request");
    assert!(build["endTime"].is_string());
    // Again: an error naming the status; nothing changes.
    let again = fleet.run(&["stop", "--table", &fleet.name, &id]);
    again.expect_code(1);
    assert!(again.stdout.is_empty());
    assert_eq!(
        again.stderr,
        format!("error: build `{id}` has already finished (STOPPED)\n")
    );
    // A running build: the flag its worker reads.
    let running = fleet.submit("app", &[]);
    fleet
        .runtime
        .block_on(
            fleet
                .store()
                .claim(&running, "test-worker", Duration::from_secs(60)),
        )
        .unwrap();
    let stop = fleet.run(&["stop", "--table", &fleet.name, &running]);
    stop.expect_code(0);
    assert!(stop.stdout.contains("stop requested"), "{}", stop.stdout);
    let record = fleet
        .runtime
        .block_on(fleet.store().get(&running))
        .unwrap()
        .unwrap();
    assert!(record.stop_requested);
    assert_eq!(record.status, BuildStatus::InProgress);
    // Unknown: bad input.
    let unknown = fleet.run(&["stop", "--table", &fleet.name, "app:nope"]);
    unknown.expect_code(2);
    assert!(unknown
        .stderr
        .contains(&format!("no build `app:nope` in table {}", fleet.name)));
}

#[test]
fn list_filters_by_project_and_status() {
    let fleet = Fleet::new("fleet-list");
    fleet.init().expect_code(0);
    fleet.project("src");
    let a1 = fleet.submit("src", &["--project", "alpha"]);
    let a2 = fleet.submit("src", &["--project", "alpha"]);
    let b1 = fleet.submit("src", &["--project", "beta"]);
    fleet
        .run(&["stop", "--table", &fleet.name, &a1])
        .expect_code(0);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["list", "--table", &fleet.name, "--format", "json"];
        all.extend_from_slice(args);
        let run = fleet.run(&all);
        run.expect_code(0);
        let json: Value = serde_json::from_str(&run.stdout).unwrap();
        json["builds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&[]), [b1.clone(), a2.clone(), a1.clone()]);
    assert_eq!(ids(&["--project", "alpha"]), [a2.clone(), a1.clone()]);
    assert_eq!(ids(&["--status", "STOPPED"]), std::slice::from_ref(&a1));
    assert_eq!(
        ids(&["--status", "queued", "--project", "beta"]),
        std::slice::from_ref(&b1)
    );
    assert!(ids(&["--project", "gamma"]).is_empty());
    let table = fleet.run(&["list", "--table", &fleet.name, "--project", "alpha"]);
    table.expect_code(0);
    assert_eq!(table.stdout.lines().count(), 4, "{}", table.stdout); // header, 2 builds, a reason
    assert!(table.stdout.contains("stopped by request"));
    let bad = fleet.run(&["list", "--table", &fleet.name, "--status", "DONE"]);
    bad.expect_code(2);
    assert!(
        bad.stderr.contains("--status: unknown build status `DONE`"),
        "{}",
        bad.stderr
    );
}

#[test]
fn schema_job_is_a_json_schema_of_the_job() {
    let run = Sandbox::new().run(["schema", "--job"]);
    run.expect_code(0);
    let schema: Value = serde_json::from_str(&run.stdout).unwrap();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for field in ["schemaVersion", "id", "projectName"] {
        assert!(required.contains(&field), "{required:?}");
    }
    for field in [
        "sourceLocationOverride",
        "environmentVariablesOverride",
        "buildspecOverride",
    ] {
        assert!(schema["properties"].get(field).is_some(), "{field}");
    }
    // The buildspec's schema is still the default.
    let plain = Sandbox::new().run(["schema"]);
    let plain: Value = serde_json::from_str(&plain.stdout).unwrap();
    assert_ne!(plain, schema);
}

#[test]
fn bad_input_is_refused_clearly_and_sends_nothing() {
    let fleet = Fleet::new("fleet-bad");
    fleet.init().expect_code(0);
    fleet.project("app");
    let q = fleet.name.as_str();
    let missing_url = fleet.queue_url().replace(q, "no-such-queue-y");
    let cases: &[(&[&str], &str)] = &[
        (
            &["submit", "--table", q, "--source-bucket", q, "-s", "app"],
            "missing --queue (or BUILDAGENT_QUEUE)",
        ),
        (
            &["submit", "--queue", q, "--source-bucket", q, "-s", "app"],
            "missing --table (or BUILDAGENT_TABLE)",
        ),
        (
            &["submit", "--queue", q, "--table", q, "-s", "app"],
            "-s app: a local directory is uploaded for the workers: give --source-bucket",
        ),
        (
            &[
                "submit",
                "--queue",
                q,
                "--table",
                q,
                "--source-bucket",
                q,
                "-s",
                "nowhere",
            ],
            "-s nowhere: nowhere is not a directory",
        ),
        (
            &[
                "submit",
                "--queue",
                q,
                "--table",
                q,
                "--source-bucket",
                q,
                "-s",
                "app",
                "--timeout",
                "1m",
            ],
            "--timeout 1m: a fleet build's timeout is 5 to 2160 minutes",
        ),
        (
            &[
                "submit",
                "--queue",
                q,
                "--table",
                q,
                "--source-bucket",
                q,
                "-s",
                "app",
                "-a",
                "/tmp/out",
            ],
            "-a /tmp/out: a fleet build's artifacts go to s3://BUCKET/PREFIX",
        ),
        (
            &[
                "submit",
                "--queue",
                q,
                "--table",
                q,
                "--source-bucket",
                q,
                "-s",
                "app",
                "--env-var",
                "NOEQUALS",
            ],
            "--env-var NOEQUALS: expected NAME=VALUE",
        ),
        (
            &[
                "submit",
                "--queue",
                q,
                "--table",
                q,
                "--source-bucket",
                q,
                "-s",
                "app",
                "--project",
                "a b",
            ],
            "`projectName` `a b`",
        ),
        (
            &[
                "submit",
                "--queue",
                "no-such-queue-x",
                "--table",
                q,
                "--source-bucket",
                q,
                "-s",
                "app",
            ],
            "queue `no-such-queue-x` does not exist",
        ),
        (
            &[
                "submit",
                "--queue",
                &missing_url,
                "--table",
                q,
                "--source-bucket",
                q,
                "-s",
                "app",
            ],
            "does not exist (`buildagent fleet init --queue NAME ...` creates it)",
        ),
        (
            &[
                "submit",
                "--queue",
                q,
                "--table",
                "no-such-table-x",
                "--source-bucket",
                q,
                "-s",
                "app",
            ],
            "table no-such-table-x does not exist",
        ),
        (
            &["status", "--table", "no-such-table-x", "app:x"],
            "table no-such-table-x does not exist",
        ),
        (
            &["status", "app:x"],
            "missing --table (or BUILDAGENT_TABLE)",
        ),
        (
            &[
                "fleet", "init", "--queue", "bad name", "--table", q, "--bucket", q,
            ],
            "queue bad name: a queue name is 1 to 76 letters",
        ),
    ];
    for (args, message) in cases {
        let run = fleet.run(args);
        assert_eq!(run.code, Some(2), "{args:?}\n{}", run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }
    assert!(fleet.messages().is_empty(), "bad input sent a message");
    let list = fleet.run(&["list", "--table", q, "--format", "json"]);
    let json: Value = serde_json::from_str(&list.stdout).unwrap();
    assert!(
        json["builds"].as_array().unwrap().is_empty(),
        "bad input wrote a record"
    );
}

/// Plays the worker for build `id`: claims it, writes log lines, finishes it with `status`.
fn play_worker(fleet: &Fleet, id: &str, status: BuildStatus, lines: &[&str]) {
    let store = fleet.store();
    let group = format!("/aws/codebuild/{}", fleet.name);
    let stream = uuid_of(id).to_string();
    fleet.runtime.block_on(async {
        store
            .claim(id, "test-worker", Duration::from_secs(60))
            .await
            .unwrap();
        let _ = fleet
            .logs
            .create_log_group()
            .log_group_name(&group)
            .send()
            .await;
        fleet
            .logs
            .create_log_stream()
            .log_group_name(&group)
            .log_stream_name(&stream)
            .send()
            .await
            .unwrap();
        store
            .set_logs(
                id,
                "test-worker",
                &LogsRecord::cloudwatch(&fleet.aws.region, &group, &stream),
            )
            .await
            .unwrap();
        // The follower sees a build in progress before its lines arrive.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let events: Vec<_> = lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(now + i as i64)
                    .message(format!("{line}\n"))
                    .build()
                    .unwrap()
            })
            .collect();
        fleet
            .logs
            .put_log_events()
            .log_group_name(&group)
            .log_stream_name(&stream)
            .set_log_events(Some(events))
            .send()
            .await
            .unwrap();
        let mut fin = Finish::new(status);
        if status != BuildStatus::Succeeded {
            fin.reason = Some(format!("the test said {status}"));
        }
        store.finish(id, "test-worker", &fin).await.unwrap();
    });
}

#[test]
fn submit_follow_prints_the_log_and_exits_with_the_status() {
    let fleet = Fleet::new("fleet-follow");
    fleet.init().expect_code(0);
    fleet.project("app");
    let url = fleet.queue_url();
    for (status, code) in [
        (BuildStatus::Succeeded, 0),
        (BuildStatus::Failed, 1),
        (BuildStatus::TimedOut, 124),
        (BuildStatus::Stopped, 130),
    ] {
        let child = fleet
            .command(&[
                "submit",
                "--queue",
                &url,
                "--table",
                &fleet.name,
                "--source-bucket",
                &fleet.name,
                "-s",
                "app",
                "--follow",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The job on the queue names the build.
        let id = loop {
            let bodies = fleet.messages();
            let done: Vec<String> = bodies
                .iter()
                .map(|b| Job::parse(b).unwrap().job.id)
                .filter(|id| {
                    fleet
                        .runtime
                        .block_on(fleet.store().get(id))
                        .unwrap()
                        .is_some_and(|r| r.status == BuildStatus::Queued)
                })
                .collect();
            if let Some(id) = done.into_iter().next() {
                break id;
            }
        };
        play_worker(&fleet, &id, status, &["line one", "line two"]);
        let run = Run::from(child.wait_with_output().unwrap());
        run.expect_code(code);
        assert_eq!(
            run.stdout,
            format!("{id}\nline one\nline two\n"),
            "{status}"
        );
        assert!(
            run.stderr.contains(&format!("build {id}: {status}")),
            "{}",
            run.stderr
        );

        // And `logs --table T ID` prints the same lines.
        let logs = fleet.run(&["logs", "--table", &fleet.name, &id]);
        logs.expect_code(0);
        assert_eq!(logs.stdout, "line one\nline two\n");
    }
}

#[test]
fn an_idempotency_token_gives_the_first_build_again() {
    let fleet = Fleet::new("fleet-token");
    fleet.init().expect_code(0);
    fleet.project("app");
    let first = fleet.submit("app", &["--idempotency-token", "tok-1"]);
    let again = fleet.submit("app", &["--idempotency-token", "tok-1"]);
    assert_eq!(again, first);
    assert_eq!(fleet.messages().len(), 1);
    let other = fleet.run(&[
        "submit",
        "--queue",
        &fleet.name,
        "--table",
        &fleet.name,
        "--source-bucket",
        &fleet.name,
        "-s",
        "app",
        "--idempotency-token",
        "tok-1",
        "--env-var",
        "A=2",
    ]);
    other.expect_code(2);
    assert!(
        other.stderr.contains(&format!(
            "idempotency token `tok-1` was used for build `{first}` with other parameters"
        )),
        "{}",
        other.stderr
    );
    let list = fleet.run(&["list", "--table", &fleet.name, "--format", "json"]);
    let json: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(json["builds"].as_array().unwrap().len(), 1);
    // Another token: another build.
    let second = fleet.submit("app", &["--idempotency-token", "tok-2"]);
    assert_ne!(second, first);
}
