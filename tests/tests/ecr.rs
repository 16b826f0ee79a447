//! Amazon ECR: pushes and pulls to an ECR registry name get their credentials from ECR's
//! `GetAuthorizationToken` (moto), in the daemonless path and through the Docker engine.
//!
//! No ECR registry runs here, so `BUILDAGENT_ECR_ENDPOINTS` maps the ECR name to the htpasswd
//! registry of `scripts/services.sh`, whose user `AWS` has the password moto's token decodes to.
//! The agent authenticates with the token of the ECR name; the tests read the result back with
//! skopeo and the docker CLI, using that password.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use buildagent_tests::images::{docker, RemoveImages};
use buildagent_tests::{services, Run, Sandbox};

/// moto's default account, which its token (and the registry's `AWS` password) is for.
const ACCOUNT: &str = "123456789012";

/// The ECR registry host the tests push to: moto's account, the tests' region.
fn ecr_host() -> String {
    format!("{ACCOUNT}.dkr.ecr.{}.amazonaws.com", services::aws().region)
}

/// A repository name no other test (or earlier run) uses.
fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("buildagent-test/ecr-{name}-{}-{nanos}", std::process::id())
}

/// The user and password of moto's `GetAuthorizationToken`, decoded, after checking that the
/// htpasswd registry takes them (scripts/services.sh adds the user).
fn moto_token() -> (String, String) {
    let aws = services::aws();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = aws_sdk_ecr::Config::builder()
        .behavior_version(aws_sdk_ecr::config::BehaviorVersion::latest())
        .endpoint_url(&aws.endpoint)
        .region(aws_sdk_ecr::config::Region::new(aws.region.clone()))
        .credentials_provider(aws_sdk_ecr::config::Credentials::new(
            &aws.access_key_id,
            &aws.secret_access_key,
            None,
            None,
            "test",
        ))
        .build();
    let client = aws_sdk_ecr::Client::from_conf(config);
    let answer = runtime
        .block_on(client.get_authorization_token().send())
        .expect("moto answers GetAuthorizationToken");
    let token = answer.authorization_data()[0]
        .authorization_token()
        .expect("a token")
        .to_string();
    let mut decode = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run base64");
    use std::io::Write;
    decode
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let decoded = decode.wait_with_output().unwrap();
    let decoded = String::from_utf8(decoded.stdout).unwrap();
    let (user, password) = decoded.split_once(':').expect("user:password");
    let token = (user.to_string(), password.to_string());
    assert_eq!(
        token,
        services::registry_ecr_credentials(),
        "moto's token is not what scripts/services.sh gave the htpasswd registry's user AWS"
    );
    token
}

/// A `buildagent` command with moto's AWS settings (and nothing else of this machine's AWS
/// configuration), the ECR host mapped to the htpasswd registry, and the Docker configuration
/// `config`.
fn agent(sandbox: &Sandbox, config: &Path, args: &[&str]) -> Command {
    let mut cmd = sandbox.command(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(services::aws_env())
        .env(
            "BUILDAGENT_ECR_ENDPOINTS",
            format!("{}={}", ecr_host(), services::registry_auth()),
        )
        .env("DOCKER_CONFIG", config)
        // Never the instance metadata service: the tests talk to 127.0.0.1 only.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", sandbox.path().join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            sandbox.path().join("no-aws-credentials"),
        );
    cmd
}

fn output(mut cmd: Command) -> Run {
    Run::from(cmd.output().expect("run buildagent"))
}

/// Asserts that no output of `run` holds `secret`.
fn no_secret(run: &Run, secret: &str) {
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "the token's password was printed\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout,
        run.stderr
    );
}

/// `skopeo inspect` of `repository:tag` on the htpasswd registry with the token's credentials:
/// the manifest digest and the number of layers.
fn inspect(repository_and_tag: &str, (user, password): &(String, String)) -> (String, usize) {
    let out = Command::new(services::tool("skopeo"))
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("{user}:{password}"),
            &format!(
                "docker://{}/{repository_and_tag}",
                services::registry_auth()
            ),
        ])
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {repository_and_tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        json["Digest"].as_str().unwrap().to_string(),
        json["Layers"].as_array().unwrap().len(),
    )
}

#[test]
fn daemonless_pushes_and_pulls_use_the_ecr_token() {
    let token = moto_token();
    let sandbox = Sandbox::new();
    let config = tempfile::tempdir().unwrap();
    let repo = unique("oci");
    let ecr = ecr_host();
    sandbox.write("files/hello.txt", "hello from ecr\n");
    let appended = output(agent(
        &sandbox,
        config.path(),
        &[
            "image",
            "append",
            "--base",
            "scratch",
            "--layer",
            "files:/app",
            "-t",
            &format!("{ecr}/{repo}:base"),
        ],
    ));
    appended.expect_code(0);
    no_secret(&appended, &token.1);
    let digest = appended.stdout.trim();
    assert_eq!(
        inspect(&format!("{repo}:base"), &token),
        (digest.to_string(), 1)
    );
    assert!(
        appended
            .stderr
            .contains(&format!("pushed {ecr}/{repo}:base {digest}")),
        "{}",
        appended.stderr
    );

    // A Dockerfile build whose base is the image just pushed: the pull of the base goes
    // through the map with the token too.
    sandbox.write(
        "ctx/Dockerfile",
        format!("FROM {ecr}/{repo}:base\nCOPY more.txt /app/\n"),
    );
    sandbox.write("ctx/more.txt", "more\n");
    let built = output(agent(
        &sandbox,
        config.path(),
        &[
            "image",
            "build",
            "--engine",
            "oci",
            "-t",
            &format!("{ecr}/{repo}:built"),
            "ctx",
        ],
    ));
    built.expect_code(0);
    no_secret(&built, &token.1);
    assert!(
        built.stderr.contains(&format!("base {ecr}/{repo}:base")),
        "{}",
        built.stderr
    );
    assert_eq!(
        inspect(&format!("{repo}:built"), &token),
        (built.stdout.trim().to_string(), 2)
    );
}

#[test]
fn docker_engine_pushes_use_the_ecr_token_under_the_mapped_name() {
    let token = moto_token();
    let registry = services::registry_auth();
    let sandbox = Sandbox::new();
    let config = tempfile::tempdir().unwrap();
    let repo = unique("docker");
    let ecr = ecr_host();
    let image = format!("{ecr}/{repo}:1");
    let retagged = format!("{ecr}/{repo}:2");
    let mapped = format!("{registry}/{repo}:1");
    let _cleanup = RemoveImages(vec![image.clone(), retagged.clone(), mapped.clone()]);
    let marker = format!("ecr-docker-{}", std::process::id());
    sandbox.write(
        "ctx/Dockerfile",
        format!(
            "FROM {}\nRUN echo {marker} > /marker\nCMD [\"cat\", \"/marker\"]\n",
            services::base_image()
        ),
    );
    let built = output(agent(
        &sandbox,
        config.path(),
        &[
            "image", "build", "--engine", "docker", "-t", &image, "--push", "ctx",
        ],
    ));
    built.expect_code(0);
    no_secret(&built, &token.1);
    assert!(
        built.stdout.contains(&format!(
            "Pushing {image} through {registry} (BUILDAGENT_ECR_ENDPOINTS)\n"
        )),
        "{}",
        built.stdout
    );
    let (digest, _) = inspect(&format!("{repo}:1"), &token);
    assert!(
        built.stdout.contains(&format!("1: digest: {digest} ")),
        "{}",
        built.stdout
    );
    // The engine keeps the image under its own name only: the push's tag is gone.
    assert_ne!(docker(["image", "inspect", &mapped]).code, Some(0));
    docker(["image", "inspect", &image]).expect_code(0);

    // `image push` of an image the engine has.
    docker(["tag", &image, &retagged]).expect_code(0);
    let pushed = output(agent(
        &sandbox,
        config.path(),
        &["image", "push", &retagged],
    ));
    pushed.expect_code(0);
    no_secret(&pushed, &token.1);
    assert_eq!(inspect(&format!("{repo}:2"), &token).0, digest);

    // The docker CLI pulls the result with the token's password and runs it.
    let login = tempfile::tempdir().unwrap();
    let auth = services::basic_auth(&token.0, &token.1);
    std::fs::write(
        login.path().join("config.json"),
        format!(
            r#"{{"auths": {{"{registry}": {{"auth": "{}"}}}}}}"#,
            auth.trim_start_matches("Basic ")
        ),
    )
    .unwrap();
    let pull = Run::from(
        Command::new("docker")
            .args(["pull", "-q", &mapped])
            .env("DOCKER_CONFIG", login.path())
            .output()
            .unwrap(),
    );
    pull.expect_code(0);
    let ran = docker(["run", "--rm", "--network", "host", &mapped]);
    ran.expect_code(0);
    assert_eq!(ran.stdout, format!("{marker}\n"));
}

#[test]
fn a_build_image_on_ecr_is_pulled_with_the_token() {
    let token = moto_token();
    let sandbox = Sandbox::new();
    let config = tempfile::tempdir().unwrap();
    let ecr = ecr_host();
    let image = format!("{ecr}/{}:1", unique("build-image"));
    let _cleanup = RemoveImages(vec![image.clone()]);
    docker(["tag", &services::base_image(), &image]).expect_code(0);
    output(agent(&sandbox, config.path(), &["image", "push", &image])).expect_code(0);
    // The engine no longer has it: `run -i` must pull it through the map.
    docker(["image", "rm", &image]).expect_code(0);
    sandbox.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"in $CODEBUILD_BUILD_IMAGE\"\n",
    );
    let run = output(agent(
        &sandbox,
        config.path(),
        &[
            "run",
            "--log-format",
            "codebuild",
            "-s",
            "src",
            "-i",
            &image,
        ],
    ));
    run.expect_code(0);
    no_secret(&run, &token.1);
    assert!(
        run.stderr.contains(&format!("Pulling {image}...")),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains(&format!("in {image}\n")),
        "{}",
        run.stdout
    );
    // Pulled under the ECR name; the mapped address's tag is gone.
    docker(["image", "inspect", &image]).expect_code(0);
    let mapped = image.replacen(&ecr, &services::registry_auth(), 1);
    assert_ne!(docker(["image", "inspect", &mapped]).code, Some(0));
}

#[test]
fn no_aws_credentials_or_no_ecr_endpoint_is_a_clear_error_with_exit_status_3() {
    let token = moto_token();
    let sandbox = Sandbox::new();
    let config = tempfile::tempdir().unwrap();
    let ecr = ecr_host();
    let repo = unique("fail");
    let image = format!("{ecr}/{repo}:1");
    let _cleanup = RemoveImages(vec![image.clone()]);
    docker(["tag", &services::base_image(), &image]).expect_code(0);
    sandbox.write("files/a.txt", "a\n");
    let append = [
        "image", "append", "--base", "scratch", "--layer", "files", "-t",
    ];

    for (case, args) in [
        ("daemonless", [&append[..], &[image.as_str()]].concat()),
        ("docker", vec!["image", "push", image.as_str()]),
    ] {
        // No credentials anywhere in the chain.
        let mut cmd = agent(&sandbox, config.path(), &args);
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("HOME", sandbox.path());
        let run = output(cmd);
        run.expect_code(3);
        no_secret(&run, &token.1);
        for part in [
            format!("cannot get an ECR authorization token for {ecr}"),
            "GetAuthorizationToken".to_string(),
            "no credentials found".to_string(),
        ] {
            assert!(run.stderr.contains(&part), "{case}: {part}\n{}", run.stderr);
        }

        // An endpoint nothing answers on.
        let mut cmd = agent(&sandbox, config.path(), &args);
        cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:1");
        let run = output(cmd);
        run.expect_code(3);
        no_secret(&run, &token.1);
        for part in [
            format!("cannot get an ECR authorization token for {ecr}"),
            "at http://127.0.0.1:1".to_string(),
            "Connection refused".to_string(),
        ] {
            assert!(run.stderr.contains(&part), "{case}: {part}\n{}", run.stderr);
        }
    }
    // Nothing reached the registry.
    let out = Command::new(services::tool("skopeo"))
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("{}:{}", token.0, token.1),
            &format!("docker://{}/{repo}:1", services::registry_auth()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn the_docker_configuration_entry_for_the_ecr_host_comes_first() {
    let token = moto_token();
    let (user, password) = services::registry_credentials();
    let sandbox = Sandbox::new();
    let ecr = ecr_host();
    let repo = unique("config-first");
    // `docker login <ecr host>` as the registry's other user.
    let config = tempfile::tempdir().unwrap();
    let auth = services::basic_auth(&user, &password);
    std::fs::write(
        config.path().join("config.json"),
        format!(
            r#"{{"auths": {{"{ecr}": {{"auth": "{}"}}}}}}"#,
            auth.trim_start_matches("Basic ")
        ),
    )
    .unwrap();
    sandbox.write("files/a.txt", "a\n");
    let mut cmd = agent(
        &sandbox,
        config.path(),
        &[
            "image",
            "append",
            "--base",
            "scratch",
            "--layer",
            "files",
            "-t",
            &format!("{ecr}/{repo}:1"),
        ],
    );
    // The token API would fail: the push succeeds only with the configuration's entry.
    cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:1");
    let run = output(cmd);
    run.expect_code(0);
    no_secret(&run, &password);
    assert_eq!(
        inspect(&format!("{repo}:1"), &token).0,
        run.stdout.trim().to_string()
    );
}
