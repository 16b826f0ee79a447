//! `buildagent image build --engine docker` and `buildagent image push` against the real
//! Docker engine and the two registries of `scripts/services.sh`. The agent talks to the engine
//! through its API only; these tests use the docker CLI to check what it did (inspect, pull,
//! run). Every test uses repositories of its own, and removes its images from the engine.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use buildagent_tests::images::{docker, RemoveImages};
use buildagent_tests::{services, Run, Sandbox};

/// A repository name no other test (or earlier run) uses.
fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("buildagent-test/{name}-{}-{nanos}", std::process::id())
}

/// `docker run --rm --network host IMAGE ARGS...`, its standard output.
fn run_image(image: &str, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm", "--network", "host", image];
    all.extend_from_slice(args);
    let run = docker(all);
    run.expect_code(0);
    run.stdout
}

/// A Docker configuration directory whose `config.json` holds `auths` for `registry`.
fn docker_config(registry: &str, user: &str, password: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let auth = services::basic_auth(user, password);
    let auth = auth.trim_start_matches("Basic ");
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    dir
}

/// A context whose image prints `token` when run.
fn printing_context(sandbox: &Sandbox, token: &str) {
    sandbox.write(
        "ctx/Dockerfile",
        format!(
            "FROM {}\nRUN echo {token} > /token\nCMD [\"cat\", \"/token\"]\n",
            services::base_image()
        ),
    );
}

/// Runs the agent in `sandbox` with `DOCKER_CONFIG` set to `config`.
fn run_with_config(sandbox: &Sandbox, config: &Path, args: &[&str]) -> Run {
    Run::from(
        sandbox
            .command(args)
            .env("DOCKER_CONFIG", config)
            .output()
            .expect("run buildagent"),
    )
}

#[test]
fn builds_a_context_with_run_copy_and_dockerignore() {
    let base = services::base_image();
    let sandbox = Sandbox::new();
    sandbox.write(
        "ctx/Dockerfile",
        format!(
            "FROM {base}\nCOPY . /app/\nRUN echo made-by-run > /app/run.txt\nCMD [\"ls\", \"-a\", \"/app\"]\n"
        ),
    );
    sandbox.write(
        "ctx/.dockerignore",
        "# secrets stay home\nsecret.txt\n**/*.log\n",
    );
    sandbox.write("ctx/hello.txt", "hello from the context\n");
    sandbox.write("ctx/secret.txt", "do not send\n");
    sandbox.write("ctx/sub/kept.txt", "kept\n");
    sandbox.write("ctx/sub/debug.log", "noise\n");
    let image = unique("context");
    let _cleanup = RemoveImages(vec![image.clone()]);

    let run = sandbox.run(["image", "build", "--engine", "docker", "-t", &image, "ctx"]);
    run.expect_code(0);
    // The engine's output, line by line, with the steps.
    assert!(
        run.stdout
            .contains("Sending build context to Docker daemon"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("Step 1/4 : FROM {base}\n")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Step 3/4 : RUN echo made-by-run > /app/run.txt\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("Successfully tagged {image}:latest")),
        "{}",
        run.stdout
    );

    let listing = run_image(&image, &[]);
    let names: Vec<&str> = listing.lines().collect();
    for present in ["hello.txt", "sub", "run.txt", "Dockerfile", ".dockerignore"] {
        assert!(names.contains(&present), "{present} missing: {names:?}");
    }
    assert!(!names.contains(&"secret.txt"), "{names:?}");
    let sub = run_image(&image, &["ls", "-a", "/app/sub"]);
    assert!(sub.lines().any(|l| l == "kept.txt"), "{sub}");
    assert!(!sub.contains("debug.log"), "{sub}");
    assert_eq!(
        run_image(&image, &["cat", "/app/hello.txt", "/app/run.txt"]),
        "hello from the context\nmade-by-run\n"
    );
}

#[test]
fn a_dockerfile_elsewhere_and_several_tags() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "docker/app.Dockerfile",
        format!(
            "FROM {}\nCOPY . /app/\nCMD [\"ls\", \"-a\", \"/app\"]\n",
            services::base_image()
        ),
    );
    sandbox.write("ctx/only.txt", "x\n");
    let (first, second) = (unique("tags-a"), unique("tags-b"));
    let _cleanup = RemoveImages(vec![format!("{first}:1"), format!("{second}:2")]);
    let run = sandbox.run([
        "image",
        "build",
        "-f",
        "docker/app.Dockerfile",
        "-t",
        &format!("{first}:1"),
        "-t",
        &format!("{second}:2"),
        "ctx",
    ]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains(&format!("Successfully tagged {second}:2")),
        "{}",
        run.stdout
    );
    let a = docker([
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("{first}:1"),
    ]);
    let b = docker([
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("{second}:2"),
    ]);
    a.expect_code(0);
    assert_eq!(a.stdout, b.stdout);
    // The Dockerfile from outside the context is not part of what COPY sees.
    let listing = run_image(&format!("{first}:1"), &[]);
    let names: Vec<&str> = listing.lines().collect();
    assert!(names.contains(&"only.txt"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with(".dockerfile.")),
        "{names:?}"
    );
}

#[test]
fn build_args_labels_and_target_reach_the_image() {
    let base = services::base_image();
    let sandbox = Sandbox::new();
    sandbox.write(
        "ctx/Dockerfile",
        format!(
            "FROM {base} AS first\nARG GREETING=default\nRUN echo \"$GREETING\" > /greeting\n\
             LABEL stage=first\n\
             FROM {base} AS second\nRUN echo second > /greeting\nLABEL stage=second\n"
        ),
    );
    let image = unique("args");
    let _cleanup = RemoveImages(vec![image.clone()]);
    let run = sandbox.run([
        "image",
        "build",
        "-t",
        &image,
        "--build-arg",
        "GREETING=hello-arg",
        "--label",
        "org.example.team=builders",
        "--label",
        "org.example.empty=",
        "--target",
        "first",
        "ctx",
    ]);
    run.expect_code(0);
    let labels = docker([
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &image,
    ]);
    labels.expect_code(0);
    let labels: serde_json::Value = serde_json::from_str(labels.stdout.trim()).unwrap();
    assert_eq!(labels["org.example.team"], "builders", "{labels}");
    assert_eq!(labels["org.example.empty"], "", "{labels}");
    assert_eq!(labels["stage"], "first", "{labels}");
    assert_eq!(run_image(&image, &["cat", "/greeting"]), "hello-arg\n");
}

#[test]
fn builds_and_pushes_to_the_open_registry() {
    let registry = services::registry();
    let sandbox = Sandbox::new();
    let token = format!("open-{}", std::process::id());
    printing_context(&sandbox, &token);
    let image = format!("{registry}/{}:1", unique("push-open"));
    let _cleanup = RemoveImages(vec![image.clone()]);
    let empty_config = tempfile::tempdir().unwrap();
    let run = run_with_config(
        &sandbox,
        empty_config.path(),
        &[
            "image", "build", "--engine", "docker", "-t", &image, "--push", "ctx",
        ],
    );
    run.expect_code(0);
    assert!(
        run.stdout
            .contains(&format!("Pushing {image} (2 layers)\n")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("  layer 2/2: "), "{}", run.stdout);
    assert!(run.stdout.contains("1: digest: sha256:"), "{}", run.stdout);

    // What the registry has, pulled back into an engine that no longer has it.
    docker(["image", "rm", "-f", &image]).expect_code(0);
    docker(["pull", "-q", &image]).expect_code(0);
    assert_eq!(run_image(&image, &[]), format!("{token}\n"));
}

#[test]
fn builds_and_pushes_to_the_htpasswd_registry_with_docker_config_auths() {
    let registry = services::registry_auth();
    let (user, password) = services::registry_credentials();
    let config = docker_config(&registry, &user, &password);
    let sandbox = Sandbox::new();
    let token = format!("auth-{}", std::process::id());
    printing_context(&sandbox, &token);
    let image = format!("{registry}/{}:v2", unique("push-auth"));
    let _cleanup = RemoveImages(vec![image.clone()]);
    let run = run_with_config(
        &sandbox,
        config.path(),
        &["image", "build", "-t", &image, "--push", "ctx"],
    );
    run.expect_code(0);
    assert!(run.stdout.contains("v2: digest: sha256:"), "{}", run.stdout);

    docker(["image", "rm", "-f", &image]).expect_code(0);
    let pull = Run::from(
        Command::new("docker")
            .args(["pull", "-q", &image])
            .env("DOCKER_CONFIG", config.path())
            .output()
            .unwrap(),
    );
    pull.expect_code(0);
    assert_eq!(run_image(&image, &[]), format!("{token}\n"));
}

#[test]
fn pulls_a_base_image_with_the_docker_config_credentials() {
    let registry = services::registry_auth();
    let (user, password) = services::registry_credentials();
    let config = docker_config(&registry, &user, &password);
    let base = format!("{registry}/{}:base", unique("private-base"));
    let image = unique("from-private");
    let _cleanup = RemoveImages(vec![image.clone(), base.clone()]);
    docker(["tag", &services::base_image(), &base]).expect_code(0);
    let pushed = Command::new("docker")
        .args(["push", "-q", &base])
        .env("DOCKER_CONFIG", config.path())
        .output()
        .unwrap();
    Run::from(pushed).expect_code(0);
    docker(["image", "rm", &base]).expect_code(0);
    let sandbox = Sandbox::new();
    sandbox.write(
        "ctx/Dockerfile",
        format!("FROM {base}\nRUN echo pulled-ok\n"),
    );

    // Without credentials the pull fails: the FROM step, exit status 1.
    let empty = tempfile::tempdir().unwrap();
    let run = run_with_config(
        &sandbox,
        empty.path(),
        &["image", "build", "-t", &image, "ctx"],
    );
    run.expect_code(1);
    assert!(
        run.stderr
            .starts_with(&format!("error: step 1/2 `FROM {base}` failed: "))
            && run.stderr.contains("no basic auth credentials"),
        "{}",
        run.stderr
    );

    // The configuration's credentials for the FROM image's registry go with the build.
    let run = run_with_config(
        &sandbox,
        config.path(),
        &["image", "build", "-t", &image, "ctx"],
    );
    run.expect_code(0);
    assert!(run.stdout.contains("\npulled-ok\n"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains(&format!("Status: Downloaded newer image for {base}")),
        "{}",
        run.stdout
    );
}

#[test]
fn pushes_an_image_the_engine_has() {
    let registry = services::registry();
    let image = format!("{registry}/{}:engine", unique("push-only"));
    let _cleanup = RemoveImages(vec![image.clone()]);
    docker(["tag", &services::base_image(), &image]).expect_code(0);
    let sandbox = Sandbox::new();
    let empty_config = tempfile::tempdir().unwrap();
    let run = run_with_config(&sandbox, empty_config.path(), &["image", "push", &image]);
    run.expect_code(0);
    assert!(
        run.stdout.contains(&format!("Pushing {image} (1 layer)\n")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  layer 1/1: pushed\n")
            || run.stdout.contains("  layer 1/1: already exists\n")
            || run.stdout.contains("  layer 1/1: mounted from "),
        "{}",
        run.stdout
    );
    let name = image.trim_start_matches(&format!("{registry}/"));
    let (repo, tag) = name.rsplit_once(':').unwrap();
    let manifest = services::http_get(
        &registry,
        &format!("/v2/{repo}/manifests/{tag}"),
        &[(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )],
    )
    .unwrap();
    assert_eq!(manifest.status, 200, "{}", manifest.text());
}

#[test]
fn pushes_with_username_and_password_from_stdin() {
    let registry = services::registry_auth();
    let (user, password) = services::registry_credentials();
    let image = format!("{registry}/{}:stdin", unique("push-stdin"));
    let _cleanup = RemoveImages(vec![image.clone()]);
    docker(["tag", &services::base_image(), &image]).expect_code(0);
    let sandbox = Sandbox::new();
    let empty_config = tempfile::tempdir().unwrap();
    let mut child = sandbox
        .command([
            "image",
            "push",
            &image,
            "--username",
            &user,
            "--password-stdin",
        ])
        .env("DOCKER_CONFIG", empty_config.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect_code(0);
    assert!(
        run.stdout.contains("stdin: digest: sha256:"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_wrong_password_is_a_clear_error_with_exit_status_3() {
    let registry = services::registry_auth();
    let (user, _) = services::registry_credentials();
    let config = docker_config(&registry, &user, "not-the-password");
    let sandbox = Sandbox::new();
    printing_context(&sandbox, "never-pushed");
    let image = format!("{registry}/{}:1", unique("wrong-password"));
    let _cleanup = RemoveImages(vec![image.clone()]);
    let run = run_with_config(
        &sandbox,
        config.path(),
        &["image", "build", "-t", &image, "--push", "ctx"],
    );
    run.expect_code(3);
    let config_file = config.path().join("config.json");
    assert!(
        run.stderr.contains(&format!(
            "error: registry {registry} refused the push: unauthorized: authentication required \
             (the credentials of user `{user}` for {registry} from {}",
            config_file.display()
        )),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("not-the-password"), "{}", run.stderr);

    // No credentials at all: the same status, and the message says none were sent.
    let empty = tempfile::tempdir().unwrap();
    let run = run_with_config(&sandbox, empty.path(), &["image", "push", &image]);
    run.expect_code(3);
    assert!(
        run.stderr
            .contains("no basic auth credentials (no credentials were sent"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_failing_run_exits_1_and_names_the_step() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "ctx/Dockerfile",
        format!(
            "FROM {}\nRUN echo first step\nRUN echo about to fail && exit 7\nRUN echo never\n",
            services::base_image()
        ),
    );
    let image = unique("failing");
    let _cleanup = RemoveImages(vec![image.clone()]);
    let run = sandbox.run(["image", "build", "-t", &image, "ctx"]);
    run.expect_code(1);
    assert!(run.stdout.contains("about to fail\n"), "{}", run.stdout);
    assert!(!run.stdout.contains("never\n"), "{}", run.stdout);
    assert_eq!(
        run.stderr,
        "error: step 3/4 `RUN echo about to fail && exit 7` failed: The command \
         '/bin/sh -c echo about to fail && exit 7' returned a non-zero code: 7\n"
    );
    assert!(!docker(["image", "inspect", &image])
        .stdout
        .contains("sha256"));
}

#[test]
fn bad_input_exits_2() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "ctx/Dockerfile",
        format!("FROM {}\n", services::base_image()),
    );
    sandbox.write("noDockerfile/x.txt", "x");
    sandbox.write("badignore/Dockerfile", "FROM scratch\n");
    sandbox.write("badignore/.dockerignore", "fine\n[unclosed\n");
    sandbox.write(
        "badsyntax/Dockerfile",
        "FROM scratch\nNOT_AN_INSTRUCTION x\n",
    );
    let cases: &[(&[&str], &str)] = &[
        (&["missing-dir"], "the build context `missing-dir` is not a directory"),
        (&["noDockerfile"], "the Dockerfile `"),
        (&["-f", "nope/Dockerfile", "ctx"], "the Dockerfile `nope/Dockerfile` does not exist"),
        (&["--build-arg", "=value", "ctx"], "--build-arg `=value`: expected K=V"),
        (&["--label", "novalue", "ctx"], "--label `novalue`: expected K=V"),
        (&["--push", "ctx"], "--push needs at least one -t/--tag"),
        (&["--username", "u", "ctx"], "--username needs --password-stdin"),
        (&["badignore"], "line 2: bad pattern `[unclosed`"),
        (
            &["badsyntax"],
            "the engine refused the build: dockerfile parse error line 2: unknown instruction: NOT_AN_INSTRUCTION",
        ),
        (&["-t", "app@sha256:abc", "ctx"], "`app@sha256:abc` is not a reference"),
    ];
    for (args, message) in cases {
        let mut all = vec!["image", "build", "--engine", "docker"];
        all.extend_from_slice(args);
        let run = sandbox.run(&all);
        run.expect_code(2);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
    let missing = format!("{}:nope", unique("not-in-engine"));
    let run = sandbox.run(["image", "push", &missing]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains(&format!("the Docker engine has no image `{missing}`")),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unreachable_engine_or_registry_exits_3() {
    let sandbox = Sandbox::new();
    sandbox.write("ctx/Dockerfile", "FROM scratch\n");
    let run = Run::from(
        sandbox
            .command(["image", "build", "ctx"])
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .unwrap(),
    );
    run.expect_code(3);
    assert!(
        run.stderr
            .contains("cannot reach the Docker engine at unix:///nonexistent/docker.sock"),
        "{}",
        run.stderr
    );

    // A registry nobody listens on.
    let image = format!("127.0.0.1:1/{}:1", unique("nowhere"));
    let _cleanup = RemoveImages(vec![image.clone()]);
    docker(["tag", &services::base_image(), &image]).expect_code(0);
    let empty = tempfile::tempdir().unwrap();
    let run = run_with_config(&sandbox, empty.path(), &["image", "push", &image]);
    run.expect_code(3);
    assert!(
        run.stderr
            .contains("pushing to registry 127.0.0.1:1 failed: ")
            && run.stderr.contains("connection refused"),
        "{}",
        run.stderr
    );
}
