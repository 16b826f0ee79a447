//! `env.parameter-store` and `env.secrets-manager` against the AWS-compatible server the test
//! script starts (moto on 127.0.0.1), `--secrets-file`, and `run --dry-run`. Each test makes its
//! own parameters and secrets, under names unique to the test and the moment, with the SDK.

use std::path::Path;

use buildagent_tests::services::{self, Aws};
use buildagent_tests::{Run, Sandbox};

/// SDK clients for moto, and a prefix unique to one test.
struct Moto {
    aws: Aws,
    ssm: aws_sdk_ssm::Client,
    sm: aws_sdk_secretsmanager::Client,
    runtime: tokio::runtime::Runtime,
    id: String,
}

/// A secret as created: its ARN and the id of its first version.
struct Secret {
    arn: String,
    version: String,
}

impl Moto {
    fn new(test: &str) -> Moto {
        let aws = services::aws();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let credentials = aws_sdk_ssm::config::Credentials::new(
            &aws.access_key_id,
            &aws.secret_access_key,
            None,
            None,
            "test",
        );
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .endpoint_url(&aws.endpoint)
            .region(aws_config::Region::new(aws.region.clone()))
            .credentials_provider(aws_sdk_ssm::config::SharedCredentialsProvider::new(
                credentials,
            ))
            .build();
        let id = format!(
            "{test}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        Moto {
            ssm: aws_sdk_ssm::Client::new(&config),
            sm: aws_sdk_secretsmanager::Client::new(&config),
            aws,
            runtime,
            id,
        }
    }

    /// `/<id>/<name>`.
    fn parameter_name(&self, name: &str) -> String {
        format!("/{}/{name}", self.id)
    }

    fn put_parameter(&self, name: &str, value: &str, secure: bool) -> String {
        let name = self.parameter_name(name);
        let kind = if secure {
            aws_sdk_ssm::types::ParameterType::SecureString
        } else {
            aws_sdk_ssm::types::ParameterType::String
        };
        self.runtime
            .block_on(
                self.ssm
                    .put_parameter()
                    .name(&name)
                    .value(value)
                    .r#type(kind)
                    .send(),
            )
            .expect("put a parameter");
        name
    }

    /// `<id>-<name>`.
    fn secret_name(&self, name: &str) -> String {
        format!("{}-{name}", self.id)
    }

    fn create_secret(&self, name: &str, value: &str) -> Secret {
        let out = self
            .runtime
            .block_on(
                self.sm
                    .create_secret()
                    .name(self.secret_name(name))
                    .secret_string(value)
                    .send(),
            )
            .expect("create a secret");
        Secret {
            arn: out.arn().unwrap().to_string(),
            version: out.version_id().unwrap().to_string(),
        }
    }

    fn create_binary_secret(&self, name: &str, value: &[u8]) {
        self.runtime
            .block_on(
                self.sm
                    .create_secret()
                    .name(self.secret_name(name))
                    .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(value))
                    .send(),
            )
            .expect("create a binary secret");
    }

    /// A new AWSCURRENT version; the previous one becomes AWSPREVIOUS.
    fn put_secret_value(&self, name: &str, value: &str) {
        self.runtime
            .block_on(
                self.sm
                    .put_secret_value()
                    .secret_id(self.secret_name(name))
                    .secret_string(value)
                    .send(),
            )
            .expect("put a secret value");
    }
}

/// A source directory with `buildspec`, and a directory outside it the build writes to.
struct Project {
    sandbox: Sandbox,
}

impl Project {
    fn new(buildspec: &str) -> Project {
        let sandbox = Sandbox::new();
        sandbox.write("src/buildspec.yml", buildspec);
        std::fs::create_dir_all(sandbox.path().join("out")).unwrap();
        Project { sandbox }
    }

    fn out(&self) -> String {
        self.sandbox.path().join("out").display().to_string()
    }

    fn read(&self, name: &str) -> String {
        let path = self.sandbox.path().join("out").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn exists(&self, name: &str) -> bool {
        self.sandbox.path().join("out").join(name).exists()
    }

    /// `buildagent run -s src --no-cache ARGS` with `env` added to the agent's environment.
    fn run(&self, args: &[&str], env: &[(&str, String)]) -> Run {
        let mut cmd = self.sandbox.command(["run", "-s", "src", "--no-cache"]);
        cmd.args(args)
            // Never ask an instance metadata service when a credential or region is missing.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        Run::from(cmd.output().expect("run buildagent"))
    }
}

/// Writes `$NAME` to `out/NAME` for each name (byte for byte, with `printf %s`).
fn save_commands(names: &[&str], out: &str) -> String {
    names
        .iter()
        .map(|n| format!("      - printf %s \"${n}\" > {out}/{n}\n"))
        .collect()
}

fn assert_hidden(text: &str, values: &[&str], what: &str) {
    for value in values {
        assert!(
            !text.contains(value),
            "{what} shows the secret {value:?}:\n{text}"
        );
    }
}

#[test]
fn every_kind_of_value_reaches_the_build_and_is_masked_everywhere() {
    let moto = Moto::new("kinds");
    let id = &moto.id;
    let plain = format!("plain-{id}");
    let secure = format!("secure-{id}");
    let p_plain = moto.put_parameter("plain", &plain, false);
    let p_secure = moto.put_parameter("secure", &secure, true);
    let (user, old_password, password) = (
        format!("user-{id}"),
        format!("old-pw-{id}"),
        format!("pw-{id}"),
    );
    let first = moto.create_secret(
        "db",
        &format!(r#"{{"user":"{user}","password":"{old_password}","port":5432}}"#),
    );
    let current = format!(r#"{{"user":"{user}","password":"{password}","port":5432}}"#);
    moto.put_secret_value("db", &current);
    let multi = format!("first-line-{id}\nsecond-line-{id}");
    moto.create_secret("multi", &multi);
    let db = moto.secret_name("db");
    let multi_name = moto.secret_name("multi");
    let arn = &first.arn;
    let version = &first.version;

    let names = [
        "PLAIN", "SECURE", "WHOLE", "PASSWORD", "PORT", "ARN_OLD", "BY_ID", "MULTI",
    ];
    let project = Project::new("");
    let out = project.out();
    project.sandbox.write(
        "src/buildspec.yml",
        format!(
            "version: 0.2\nenv:\n  parameter-store:\n    PLAIN: {p_plain}\n    SECURE: {p_secure}\n  \
             secrets-manager:\n    WHOLE: {db}\n    PASSWORD: {db}:password\n    PORT: {db}:port\n    \
             ARN_OLD: {arn}:password:AWSPREVIOUS\n    BY_ID: {db}:password::{version}\n    \
             MULTI: {multi_name}\nphases:\n  build:\n    commands:\n{}      - echo \"plain=$PLAIN secure=$SECURE password=$PASSWORD old=$ARN_OLD\"\n      \
             - echo \"$MULTI\"\n      - echo \"$WHOLE\"\n      - echo {password} {secure}\n",
            save_commands(&names, &out)
        ),
    );

    let secrets = [
        plain.as_str(),
        secure.as_str(),
        password.as_str(),
        old_password.as_str(),
        &format!("first-line-{id}"),
        &format!("second-line-{id}"),
        &user,
    ];
    let log = project.sandbox.path().join("build.log");
    let json = project
        .run(
            &["--log-format", "json", "--log-file", log.to_str().unwrap()],
            &moto.aws.env(),
        )
        .expect_code(0)
        .stdout
        .clone();

    // The build saw every value as stored.
    assert_eq!(project.read("PLAIN"), plain);
    assert_eq!(project.read("SECURE"), secure);
    assert_eq!(project.read("WHOLE"), current);
    assert_eq!(project.read("PASSWORD"), password);
    assert_eq!(project.read("PORT"), "5432");
    assert_eq!(project.read("ARN_OLD"), old_password);
    assert_eq!(project.read("BY_ID"), old_password);
    assert_eq!(project.read("MULTI"), multi);

    // Nothing the agent wrote shows one: not the JSON events, not the log file.
    let log = std::fs::read_to_string(&log).unwrap();
    assert_hidden(&json, &secrets, "the JSON events");
    assert_hidden(&log, &secrets, "the log file");
    assert!(
        log.contains("plain=*** secure=*** password=*** old=***"),
        "{log}"
    );
    assert!(log.contains("Running command echo *** ***"), "{log}");
    assert!(json.contains(r#""bytes":"***\n""#), "{json}");
    for line in json.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("one JSON event per line");
    }

    // Nor the terminal in CodeBuild's format.
    let run = project.run(&[], &moto.aws.env());
    run.expect_code(0);
    assert_hidden(&run.stdout, &secrets, "the terminal");
    assert_hidden(&run.stderr, &secrets, "standard error");
    assert!(run
        .stdout
        .contains("plain=*** secure=*** password=*** old=***"));
}

#[test]
fn more_than_ten_parameters_are_fetched_in_batches() {
    let moto = Moto::new("batches");
    let count = 23;
    let mut spec = String::from("version: 0.2\nenv:\n  parameter-store:\n");
    for i in 0..count {
        let name = moto.put_parameter(
            &format!("p{i}"),
            &format!("value-{i}-{}", moto.id),
            i % 2 == 0,
        );
        spec.push_str(&format!("    P{i}: {name}\n"));
    }
    // Two variables may read one parameter; it is asked for once.
    spec.push_str(&format!("    AGAIN: {}\n", moto.parameter_name("p0")));
    let project = Project::new("");
    let mut names: Vec<String> = (0..count).map(|i| format!("P{i}")).collect();
    names.push("AGAIN".into());
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    spec.push_str(&format!(
        "phases:\n  build:\n    commands:\n{}",
        save_commands(&refs, &project.out())
    ));
    project.sandbox.write("src/buildspec.yml", spec);
    project.run(&[], &moto.aws.env()).expect_code(0);
    for i in 0..count {
        assert_eq!(
            project.read(&format!("P{i}")),
            format!("value-{i}-{}", moto.id)
        );
    }
    assert_eq!(project.read("AGAIN"), format!("value-0-{}", moto.id));
}

/// A buildspec whose only command creates `out/ran`.
fn marker_buildspec(env: &str, out: &str) -> String {
    format!(
        "version: 0.2\nenv:\n{env}phases:\n  install:\n    commands:\n      - touch {out}/ran\n"
    )
}

#[test]
fn a_missing_parameter_fails_download_source_and_runs_nothing() {
    let moto = Moto::new("missing-parameter");
    let present = moto.put_parameter("present", &format!("here-{}", moto.id), false);
    let missing = moto.parameter_name("missing");
    let project = Project::new("");
    project.sandbox.write(
        "src/buildspec.yml",
        marker_buildspec(
            &format!("  parameter-store:\n    OK: {present}\n    GONE: {missing}\n"),
            &project.out(),
        ),
    );
    let run = project.run(&[], &moto.aws.env());
    run.expect_code(1);
    assert!(
        run.stdout
            .contains("Phase complete: DOWNLOAD_SOURCE State: FAILED"),
        "{}",
        run.stdout
    );
    let expected = format!(
        "Phase context status code: Decrypted Variables Error Message: parameter does not \
         exist: {missing} (ParameterNotFound, variable GONE)"
    );
    assert!(run.stdout.contains(&expected), "{}", run.stdout);
    assert!(
        !run.stdout.contains("Entering phase INSTALL"),
        "{}",
        run.stdout
    );
    assert!(!project.exists("ran"), "a command ran");

    // A dry run reports it the same way, with the same status.
    let dry = project.run(&["--dry-run"], &moto.aws.env());
    dry.expect_code(1);
    assert!(dry.stderr.contains(&expected), "{}", dry.stderr);
    assert!(!project.exists("ran"));
}

#[test]
fn a_missing_secret_fails_download_source_with_the_service_code() {
    let moto = Moto::new("missing-secret");
    let missing = moto.secret_name("missing");
    let project = Project::new("");
    project.sandbox.write(
        "src/buildspec.yml",
        marker_buildspec(
            &format!("  secrets-manager:\n    TOKEN: {missing}:token\n"),
            &project.out(),
        ),
    );
    let run = project.run(&[], &moto.aws.env());
    run.expect_code(1);
    let expected = format!(
        "Phase context status code: Secrets Manager Error Message: ResourceNotFoundException: \
         Secrets Manager can't find the specified secret. (secret {missing}, variable TOKEN)"
    );
    assert!(run.stdout.contains(&expected), "{}", run.stdout);
    assert!(!project.exists("ran"), "a command ran");
    let dry = project.run(&["--dry-run"], &moto.aws.env());
    dry.expect_code(1);
    assert!(dry.stderr.contains(&expected), "{}", dry.stderr);

    // A version stage the secret does not have is the same error, naming the stage.
    moto.create_secret("staged", "v");
    let staged = moto.secret_name("staged");
    project.sandbox.write(
        "src/buildspec.yml",
        marker_buildspec(
            &format!("  secrets-manager:\n    OLD: {staged}::AWSPREVIOUS\n"),
            &project.out(),
        ),
    );
    let run = project.run(&[], &moto.aws.env());
    run.expect_code(1);
    assert!(
        run.stdout.contains(&format!(
            "ResourceNotFoundException: Secrets Manager can't find the specified secret. \
             (secret {staged}::AWSPREVIOUS, variable OLD)"
        )),
        "{}",
        run.stdout
    );
    assert!(!project.exists("ran"));
}

#[test]
fn a_missing_json_key_a_non_json_secret_and_a_binary_secret_are_refused() {
    let moto = Moto::new("refused");
    let value = format!("pw-{}", moto.id);
    moto.create_secret("json", &format!(r#"{{"password":"{value}"}}"#));
    moto.create_secret("text", &value);
    moto.create_binary_secret("binary", &[0, 1, 2, 255]);
    let project = Project::new("");
    let cases = [
        (
            format!("{}:user", moto.secret_name("json")),
            format!(
                "Secrets Manager Error Message: secret {}: the JSON value has no key `user` (variable V)",
                moto.secret_name("json")
            ),
        ),
        (
            format!("{}:user", moto.secret_name("text")),
            format!(
                "Secrets Manager Error Message: secret {}: the value is not JSON, so its key `user` cannot be read (variable V)",
                moto.secret_name("text")
            ),
        ),
        (
            moto.secret_name("binary"),
            format!(
                "Secrets Manager Error Message: secret {} holds a binary value (SecretBinary)",
                moto.secret_name("binary")
            ),
        ),
    ];
    for (reference, expected) in cases {
        project.sandbox.write(
            "src/buildspec.yml",
            marker_buildspec(
                &format!("  secrets-manager:\n    V: {reference}\n"),
                &project.out(),
            ),
        );
        let run = project.run(&[], &moto.aws.env());
        run.expect_code(1);
        assert!(run.stdout.contains(&expected), "{expected}\n{}", run.stdout);
        assert_hidden(&run.stdout, &[&value], "the log");
        assert!(!project.exists("ran"));
    }
}

#[test]
fn an_override_wins_over_a_resolved_value_which_stays_masked() {
    let moto = Moto::new("override");
    let resolved = format!("resolved-{}", moto.id);
    let name = moto.put_parameter("token", &resolved, true);
    let project = Project::new("");
    let out = project.out();
    project.sandbox.write(
        "src/buildspec.yml",
        format!(
            "version: 0.2\nenv:\n  parameter-store:\n    TOKEN: {name}\nphases:\n  build:\n    \
             commands:\n{}      - echo \"token=$TOKEN\" {resolved}\n",
            save_commands(&["TOKEN"], &out)
        ),
    );
    let pinned = format!("pinned-{}", moto.id);
    let run = project.run(&["--env-var", &format!("TOKEN={pinned}")], &moto.aws.env());
    run.expect_code(0);
    assert_eq!(project.read("TOKEN"), pinned);
    // The resolved value, no variable's value any more, is still masked; so is the override of
    // a secret.
    assert_hidden(&run.stdout, &[&resolved, &pinned], "the log");
    assert!(run.stdout.contains("token=*** ***"), "{}", run.stdout);

    let dry = project.run(
        &["--dry-run", "--env-var", &format!("TOKEN={pinned}")],
        &moto.aws.env(),
    );
    dry.expect_code(0);
    assert!(
        dry.stdout
            .lines()
            .any(|l| l.starts_with("override") && l.contains(" TOKEN ") && l.ends_with(" ***")),
        "{}",
        dry.stdout
    );
}

#[test]
fn the_secrets_file_wins_for_the_names_it_lists() {
    let moto = Moto::new("file-wins");
    let listed = moto.put_parameter("listed", &format!("from-aws-{}", moto.id), false);
    let unlisted = moto.put_parameter("unlisted", &format!("aws-only-{}", moto.id), false);
    let project = Project::new("");
    let out = project.out();
    project.sandbox.write(
        "src/buildspec.yml",
        format!(
            "version: 0.2\nenv:\n  parameter-store:\n    LISTED: {listed}\n    UNLISTED: {unlisted}\n  \
             secrets-manager:\n    DB_USER: offline-db:user\nphases:\n  build:\n    commands:\n{}      \
             - echo \"$LISTED $UNLISTED $DB_USER\"\n",
            save_commands(&["LISTED", "UNLISTED", "DB_USER"], &out)
        ),
    );
    let file = project.sandbox.write(
        "secrets.yml",
        format!(
            "parameter-store:\n  {listed}: from-file-{id}\nsecrets-manager:\n  offline-db: '{{\"user\":\"file-user-{id}\"}}'\n",
            id = moto.id
        ),
    );
    let run = project.run(&["--secrets-file", file.to_str().unwrap()], &moto.aws.env());
    run.expect_code(0);
    assert_eq!(project.read("LISTED"), format!("from-file-{}", moto.id));
    assert_eq!(project.read("UNLISTED"), format!("aws-only-{}", moto.id));
    assert_eq!(project.read("DB_USER"), format!("file-user-{}", moto.id));
    assert!(run.stdout.contains("*** *** ***"), "{}", run.stdout);
    assert_hidden(
        &run.stdout,
        &[
            &format!("from-file-{}", moto.id),
            &format!("file-user-{}", moto.id),
        ],
        "the log",
    );
}

/// The agent's environment with no way to reach AWS: an endpoint nothing listens on, no
/// credentials, no profile.
fn no_aws(home: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", String::new()),
        ("AWS_SECRET_ACCESS_KEY", String::new()),
        ("AWS_CONFIG_FILE", home.join("none").display().to_string()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            home.join("none").display().to_string(),
        ),
        ("HOME", home.display().to_string()),
    ]
}

#[test]
fn a_secrets_file_that_lists_every_name_needs_no_aws() {
    let project = Project::new("");
    let out = project.out();
    project.sandbox.write(
        "src/buildspec.yml",
        format!(
            "version: 0.2\nenv:\n  parameter-store:\n    A: /offline/a\n    EMPTY: /offline/empty\n  \
             secrets-manager:\n    B: arn:aws:secretsmanager:us-east-1:000000000000:secret:ci-AbCdEf:key:AWSPREVIOUS\n    \
             C: plain-secret\nphases:\n  build:\n    commands:\n{}      - test -z \"$EMPTY\" && test \"${{EMPTY+set}}\" = set\n",
            save_commands(&["A", "B", "C"], &out)
        ),
    );
    let file = project.sandbox.write(
        "secrets.yml",
        "parameter-store:\n  /offline/a: offline-a-value\n  /offline/empty: ''\nsecrets-manager:\n  \
         arn:aws:secretsmanager:us-east-1:000000000000:secret:ci-AbCdEf:key:AWSPREVIOUS: offline-b-value\n  \
         plain-secret: \"line one\\nline two\"\n",
    );
    let env = no_aws(project.sandbox.path());
    let run = project.run(&["--secrets-file", file.to_str().unwrap()], &env);
    run.expect_code(0);
    assert_eq!(project.read("A"), "offline-a-value");
    assert_eq!(project.read("B"), "offline-b-value");
    assert_eq!(project.read("C"), "line one\nline two");
    assert_hidden(
        &run.stdout,
        &["offline-a-value", "offline-b-value", "line one"],
        "the log",
    );

    // A name the file does not list goes to AWS, which cannot be reached here.
    project.sandbox.write(
        "src/buildspec.yml",
        marker_buildspec(
            "  parameter-store:\n    A: /offline/a\n    X: /not/listed\n",
            &out,
        ),
    );
    let run = project.run(&["--secrets-file", file.to_str().unwrap()], &env);
    run.expect_code(1);
    assert!(
        run.stdout.contains(
            "Phase context status code: Decrypted Variables Error Message: cannot get the \
             parameters /not/listed:"
        ),
        "{}",
        run.stdout
    );
    assert!(!project.exists("ran"));
}

#[test]
fn a_broken_secrets_file_is_invalid_input_that_names_the_line() {
    let project = Project::new(&marker_buildspec(
        "  variables:\n    A: a\n",
        "/nonexistent",
    ));
    let file = project.sandbox.write(
        "secrets.yml",
        "parameter-store:\n  /a: hunter2\nsecret-manager:\n  b: hunter3\n",
    );
    let run = project.run(&["--secrets-file", file.to_str().unwrap()], &[]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(&format!(
            "{}:3:1: unknown section `secret-manager` in the secrets file",
            file.display()
        )),
        "{}",
        run.stderr
    );
    assert!(run
        .stderr
        .contains("help: the sections are `parameter-store`"));
    assert_hidden(&run.stderr, &["hunter2", "hunter3"], "the error");
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn a_dry_run_lists_every_origin_redacts_secrets_and_runs_nothing() {
    let moto = Moto::new("dry-run");
    let param_value = format!("param-{}", moto.id);
    let secret_value = format!("secret-{}", moto.id);
    let param = moto.put_parameter("p", &param_value, true);
    moto.create_secret("s", &format!(r#"{{"k":"{secret_value}"}}"#));
    let secret = format!("{}:k", moto.secret_name("s"));
    let project = Project::new("");
    let out = project.out();
    project.sandbox.write(
        "src/buildspec.yml",
        format!(
            "version: 0.2\nenv:\n  variables:\n    FROM_SPEC: spec-value\n    PINNED: spec\n  \
             parameter-store:\n    FROM_PARAM: {param}\n  secrets-manager:\n    FROM_SECRET: {secret}\n    \
             OFFLINE: offline-id\nphases:\n  build:\n    commands:\n      - touch {out}/ran\n\
             artifacts:\n  files: ['**/*']\n"
        ),
    );
    project
        .sandbox
        .write("env.txt", "FROM_ENV_FILE=env-file-value\n");
    let file = project.sandbox.write(
        "secrets.yml",
        "secrets-manager:\n  offline-id: offline-value\n",
    );
    let artifacts = project.sandbox.path().join("artifacts");
    let mut env = moto.aws.env().to_vec();
    env.push(("FROM_EXECUTOR", "executor-value".to_string()));
    let run = project.run(
        &[
            "--dry-run",
            "-e",
            "env.txt",
            "--env-var",
            "PINNED=override-value",
            "--secret",
            "HIDDEN=override-secret",
            "--secrets-file",
            file.to_str().unwrap(),
            "-a",
            artifacts.to_str().unwrap(),
        ],
        &env,
    );
    run.expect_code(0);
    let line = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{}", run.stdout))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("FROM_EXECUTOR"),
        "executor FROM_EXECUTOR executor-value"
    );
    assert_eq!(line("FROM_SPEC"), "buildspec FROM_SPEC spec-value");
    assert_eq!(
        line("FROM_PARAM"),
        format!("parameter-store FROM_PARAM *** ({param} from AWS)")
    );
    assert_eq!(
        line("FROM_SECRET"),
        format!("secrets-manager FROM_SECRET *** ({secret} from AWS)")
    );
    assert_eq!(
        line("OFFLINE"),
        "secrets-manager OFFLINE *** (offline-id from --secrets-file)"
    );
    assert_eq!(
        line("FROM_ENV_FILE"),
        "env-file FROM_ENV_FILE env-file-value"
    );
    assert_eq!(
        line("CODEBUILD_BUILD_NUMBER"),
        "agent CODEBUILD_BUILD_NUMBER 1"
    );
    assert_eq!(line("PINNED"), "override PINNED override-value");
    assert_eq!(line("HIDDEN"), "override HIDDEN ***");
    // The test's own credentials are in the executor layer: never printed.
    assert_eq!(
        line("AWS_SECRET_ACCESS_KEY"),
        "executor AWS_SECRET_ACCESS_KEY ***"
    );
    assert_hidden(
        &run.stdout,
        &[
            &param_value,
            &secret_value,
            "offline-value",
            "override-secret",
        ],
        "the dry run",
    );
    // Nothing ran and nothing was left: no command, no artifacts, no source copy.
    assert!(!project.exists("ran"));
    assert!(!artifacts.exists());
    let src_dir = line("CODEBUILD_SRC_DIR");
    let src_dir = src_dir.split(' ').nth(2).unwrap();
    assert!(!Path::new(src_dir).exists(), "{src_dir} was left behind");

    // The same as JSON.
    let run = project.run(
        &[
            "--dry-run",
            "--log-format",
            "json",
            "--secrets-file",
            file.to_str().unwrap(),
        ],
        &env,
    );
    run.expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
    let vars = doc["variables"].as_array().unwrap();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap().clone();
    assert_eq!(var("FROM_PARAM")["origin"], "parameter-store");
    assert_eq!(var("FROM_PARAM")["value"], "***");
    assert_eq!(var("FROM_PARAM")["source"], "aws");
    assert_eq!(var("OFFLINE")["source"], "secrets-file");
    assert_eq!(var("FROM_SPEC")["value"], "spec-value");
    assert_hidden(
        &run.stdout,
        &[&param_value, &secret_value],
        "the JSON dry run",
    );
}

#[test]
fn per_service_endpoint_settings_are_honoured() {
    let moto = Moto::new("endpoints");
    let param = moto.put_parameter("p", &format!("p-{}", moto.id), false);
    moto.create_secret("s", &format!("s-{}", moto.id));
    let project = Project::new("");
    let out = project.out();
    project.sandbox.write(
        "src/buildspec.yml",
        format!(
            "version: 0.2\nenv:\n  parameter-store:\n    P: {param}\n  secrets-manager:\n    S: {}\n\
             phases:\n  build:\n    commands:\n{}",
            moto.secret_name("s"),
            save_commands(&["P", "S"], &out)
        ),
    );
    // The general endpoint leads nowhere; the per-service ones lead to moto.
    let mut env = moto.aws.env().to_vec();
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:1".to_string()));
    env.push(("AWS_ENDPOINT_URL_SSM", moto.aws.endpoint.clone()));
    env.push((
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        moto.aws.endpoint.clone(),
    ));
    project.run(&[], &env).expect_code(0);
    assert_eq!(project.read("P"), format!("p-{}", moto.id));
    assert_eq!(project.read("S"), format!("s-{}", moto.id));
}
