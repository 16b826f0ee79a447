//! `buildagent run -i IMAGE`: the build inside a container of a build image, through the Docker
//! Engine the test script starts (no bridge: host network), with the busybox base image the
//! script makes locally. Every test also checks that no container is left behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use buildagent_tests::images::{with_libraries, Content, RemoveImages, TestImage};
use buildagent_tests::services;
use buildagent_tests::{Run, Sandbox};

/// The tests of this file run one at a time, so that each one's "no container left" check sees
/// only its own build's container.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The containers the agent made (labelled `buildagent.build`), running or not.
fn agent_containers() -> Vec<String> {
    let out = Command::new(services::tool("docker"))
        .args(["ps", "-aq", "--filter", "label=buildagent.build"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs `spec` from `src/` with `-i <base image>` and `args` (a copy of the source, as CodeBuild).
fn build(s: &Sandbox, spec: &str, args: &[&str]) -> Run {
    build_in(&services::base_image(), s, spec, args)
}

/// Runs `spec` from `src/` with `-i image` and `args`.
fn build_in(image: &str, s: &Sandbox, spec: &str, args: &[&str]) -> Run {
    services::docker();
    s.write("src/buildspec.yml", spec);
    let image = image.to_string();
    let mut all = vec![
        "run".to_string(),
        "--log-format".into(),
        "codebuild".into(),
        "-s".into(),
        s.path().join("src").display().to_string(),
        "-i".into(),
        image,
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    s.run(all)
}

fn printed(run: &Run) -> Vec<&str> {
    run.stdout
        .lines()
        .filter(|l| !l.starts_with("[Container]") && !l.is_empty())
        .collect()
}

/// No container of the agent's exists that did not exist before the test.
fn assert_no_container_left(before: &[String]) {
    let left: Vec<String> = agent_containers()
        .into_iter()
        .filter(|c| !before.contains(c))
        .collect();
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

#[test]
fn commands_run_in_the_image_with_the_script_model() {
    let _serial = serial();
    let before = agent_containers();
    let s = Sandbox::new();
    s.write("src/sub/.keep", "");
    let run = build(
        &s,
        "version: 0.2\n\
         env:\n  variables:\n    FROM_SPEC: spec\n\
         phases:\n  install:\n    commands:\n      - cat /etc/os-release 2>/dev/null | head -1; busybox | head -1 | cut -d' ' -f1\n\
         \x20     - cd sub && export KEPT=yes && X=1\n\
         \x20 build:\n    commands:\n      - pwd\n      - echo \"$KEPT $X $FROM_SPEC $OVER\"\n\
         \x20     - echo \"$CODEBUILD_BUILD_IMAGE\"\n      - echo \"$CODEBUILD_SRC_DIR\"\n\
         \x20     - exit 3\n      - echo never\n\
         \x20 post_build:\n    commands:\n      - echo \"post $CODEBUILD_BUILD_SUCCEEDING\"\n",
        &["--env-var", "OVER=override"],
    );
    run.expect_code(1);
    let lines = printed(&run);
    assert_eq!(lines[0], "BusyBox", "{}", run.stdout);
    let src = lines[4];
    assert!(
        src.starts_with("/codebuild/output/src") && src.ends_with("/src"),
        "{}",
        run.stdout
    );
    assert_eq!(lines[1], format!("{src}/sub"));
    assert_eq!(lines[2], "yes 1 spec override");
    assert_eq!(lines[3], services::base_image());
    assert_eq!(lines[5], "post 0");
    assert!(!run.stdout.contains("never"));
    assert!(run.stdout.contains("Phase complete: BUILD State: FAILED"));
    assert_no_container_left(&before);
}

#[test]
fn artifacts_made_in_the_container_are_collected_on_the_host() {
    let _serial = serial();
    let before = agent_containers();
    let s = Sandbox::new();
    let out = s.path().join("out");
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - mkdir -p dist && echo made-inside > dist/a.txt\n\
         artifacts:\n  files: ['dist/**/*']\n",
        &["-a", &out.display().to_string(), "--artifacts-packaging", "none"],
    );
    run.expect_code(0);
    let made = std::fs::read_to_string(out.join("artifacts/dist/a.txt")).unwrap();
    assert_eq!(made, "made-inside\n");
    assert_no_container_left(&before);
}

#[test]
fn secrets_are_masked_and_background_processes_are_swept() {
    let _serial = serial();
    let before = agent_containers();
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"token=$TOKEN\"\n      - sleep 600 &\n      - echo done\n",
        &["--secret", "TOKEN=hunter2-secret"],
    );
    run.expect_code(0);
    assert!(run.stdout.contains("token=***"), "{}", run.stdout);
    assert!(!run.stdout.contains("hunter2-secret"));
    assert!(
        run.stdout.contains("sleep 600"),
        "the sweep names it\n{}",
        run.stdout
    );
    assert_no_container_left(&before);
}

/// `-c` as the local agent's: this machine's `AWS_*` variables (keys masked) and its `~/.aws`
/// (read-only at `/root/.aws`); without it, neither.
#[test]
fn aws_credentials_are_passed_with_c_and_only_with_it() {
    let _serial = serial();
    let s = Sandbox::new();
    s.write("home/.aws/config", "[default]\nregion = eu-west-3\n");
    let spec = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"keys=$AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY output=$AWS_DEFAULT_OUTPUT\"\n      - cat /root/.aws/config || echo no-config\n      - touch /root/.aws/x 2>/dev/null && echo writable || echo not-writable\n";
    s.write("src/buildspec.yml", spec);
    let run_with = |extra: &[&str]| {
        let mut args = vec![
            "run".to_string(),
            "--log-format".into(),
            "codebuild".into(),
            "-s".into(),
            s.path().join("src").display().to_string(),
            "-i".into(),
            services::base_image(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        Run::from(
            s.command(args)
                .env("HOME", s.path().join("home"))
                .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY42")
                .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-secret-42")
                .env("AWS_DEFAULT_OUTPUT", "json")
                .output()
                .expect("run buildagent"),
        )
    };
    services::docker();
    let with = run_with(&["-c"]);
    with.expect_code(0);
    assert!(
        with.stdout.contains("keys=***/*** output=json"),
        "{}",
        with.stdout
    );
    assert!(
        with.stdout.contains("region = eu-west-3"),
        "{}",
        with.stdout
    );
    assert!(with.stdout.contains("not-writable"), "{}", with.stdout);
    for secret in ["AKIAEXAMPLEKEY42", "wJalrXUtnFEMI-secret-42"] {
        assert!(!with.stdout.contains(secret) && !with.stderr.contains(secret));
    }
    let without = run_with(&[]);
    without.expect_code(0);
    assert!(
        without.stdout.contains("keys=/ output="),
        "{}",
        without.stdout
    );
    assert!(without.stdout.contains("no-config"), "{}", without.stdout);
}

#[test]
fn run_as_uses_the_images_users() {
    let _serial = serial();
    let before = agent_containers();
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    run-as: root\n    commands:\n      - id -u\n  post_build:\n    run-as: nobody-here\n    commands:\n      - echo never\n",
        &[],
    );
    run.expect_code(1);
    assert_eq!(printed(&run), ["0"]);
    assert!(
        run.stdout.contains("unknown run-as user `nobody-here`"),
        "{}",
        run.stdout
    );
    assert_no_container_left(&before);
}

#[test]
fn a_timeout_ends_the_build_and_removes_the_container() {
    let _serial = serial();
    let before = agent_containers();
    let s = Sandbox::new();
    let started = Instant::now();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - sh -c 'sleep 600' & sleep 600\n",
        &["--timeout", "3s", "--grace", "1s"],
    );
    run.expect_code(124);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(run
        .stdout
        .contains("Phase complete: BUILD State: TIMED_OUT"));
    assert_no_container_left(&before);
}

#[test]
fn sigint_stops_the_build_and_removes_the_container() {
    let _serial = serial();
    let before = agent_containers();
    let s = Sandbox::new();
    services::docker();
    s.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo started\n      - trap '' TERM; sleep 600\n",
    );
    let child = s
        .command([
            "run",
            "--log-format",
            "codebuild",
            "--grace",
            "1s",
            "-s",
            &s.path().join("src").display().to_string(),
            "-i",
            &services::base_image(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the build's container exists and the command runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ours: Vec<_> = agent_containers()
            .into_iter()
            .filter(|c| !before.contains(c))
            .collect();
        if !ours.is_empty() {
            std::thread::sleep(Duration::from_secs(2));
            break;
        }
        assert!(Instant::now() < deadline, "no container appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let run = Run::from(out);
    run.expect_code(130);
    assert!(run.stdout.contains("started"), "{}", run.stdout);
    assert_no_container_left(&before);
}

#[test]
fn a_missing_image_is_a_clear_fault() {
    let _serial = serial();
    let before = agent_containers();
    let s = Sandbox::new();
    services::docker();
    s.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [echo x]\n",
    );
    let run = s.run([
        "run",
        "-s",
        &s.path().join("src").display().to_string(),
        "-i",
        "127.0.0.1:45001/buildagent-test/does-not-exist:1",
    ]);
    run.expect_code(3);
    assert!(run.stderr.contains("does-not-exist"), "{}", run.stderr);
    assert_no_container_left(&before);
}

// ---------------------------------------------------------------------------------------------
// The same buildspec on this machine and in the base image: the engine's phase and environment
// behaviour (tests/tests/run.rs) must not depend on where commands run.

/// Runs `spec` from a fresh `src/` twice, on this machine and with `-i <base image>`, with the
/// same `args`; returns (host, container).
fn on_host_and_in_a_container(spec: &str, args: &[&str]) -> (Run, Run) {
    let host = Sandbox::new();
    host.write("src/buildspec.yml", spec);
    let mut all = vec![
        "run".to_string(),
        "--log-format".into(),
        "codebuild".into(),
        "-s".into(),
        host.path().join("src").display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let on_host = host.run(all);
    let in_container = build(&Sandbox::new(), spec, args);
    (on_host, in_container)
}

/// What a build printed and how its phases ended, with the source directory's path (which
/// differs: `/tmp/buildagent-src-*` on the host, `/codebuild/output/src*` in a container) as
/// `$SRC`.
fn outcome(run: &Run) -> Vec<String> {
    let src = run
        .stdout
        .lines()
        .find_map(|l| {
            l.split_once("CODEBUILD_SRC_DIR=")
                .map(|(_, d)| d.to_string())
        })
        .expect("the log names CODEBUILD_SRC_DIR");
    run.stdout
        .lines()
        .filter(|l| {
            !l.is_empty()
                && (!l.starts_with("[Container]")
                    || l.contains("Phase complete:")
                    || l.contains("Phase context status code:")
                    || l.contains("Entering phase"))
        })
        .map(|l| {
            let l = l.replace(&src, "$SRC");
            // The timestamp of a `[Container]` line.
            match l.strip_prefix("[Container] ") {
                Some(rest) if rest.len() > 27 => rest[27..].to_string(),
                _ => l,
            }
        })
        .collect()
}

/// Asserts that the host and the container builds ended alike and printed the same, and returns
/// the container's outcome.
fn same_on_host_and_in_a_container(spec: &str, args: &[&str], code: i32) -> Vec<String> {
    let _serial = serial();
    let before = agent_containers();
    let (host, container) = on_host_and_in_a_container(spec, args);
    host.expect_code(code);
    container.expect_code(code);
    let (h, c) = (outcome(&host), outcome(&container));
    assert_eq!(
        h, c,
        "host and container differ\n--- host\n{}\n--- container\n{}",
        host.stdout, container.stdout
    );
    assert_no_container_left(&before);
    c
}

#[test]
fn phase_order_finally_and_failures_match_the_host() {
    let out = same_on_host_and_in_a_container(
        "version: 0.2\nphases:\n\
         \x20 post_build:\n    commands: [echo post $CODEBUILD_BUILD_SUCCEEDING]\n    finally: [echo post-finally]\n\
         \x20 build:\n    commands: ['false', echo never]\n    finally: [echo fin $CODEBUILD_BUILD_SUCCEEDING, 'false', echo never-either]\n\
         \x20 pre_build:\n    on-failure: CONTINUE\n    commands: ['exit 4']\n\
         \x20 install:\n    commands: [echo install $CODEBUILD_BUILD_SUCCEEDING]\n",
        &[],
        1,
    );
    let text = out.join("\n");
    for expected in [
        "install 1",
        "Phase complete: PRE_BUILD State: FAILED",
        "Reason: exit status 4",
        "fin 0",
        "Phase complete: BUILD State: FAILED",
        "post 0",
        "post-finally",
        "Phase complete: POST_BUILD State: SUCCEEDED",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
    assert!(!text.contains("never"), "{text}");
    let entered: Vec<&String> = out.iter().filter(|l| l.contains("Entering")).collect();
    assert_eq!(entered.len(), 4, "{text}");
    assert!(entered[0].contains("INSTALL") && entered[3].contains("POST_BUILD"));
}

#[test]
fn abort_and_install_failures_stop_the_build_as_on_the_host() {
    let out = same_on_host_and_in_a_container(
        "version: 0.2\nphases:\n  build:\n    on-failure: ABORT\n    commands: ['false']\n  post_build:\n    commands: [echo never]\n\
         artifacts:\n  files: [buildspec.yml]\n",
        &[],
        1,
    );
    assert!(
        !out.iter()
            .any(|l| l.contains("POST_BUILD") || l.contains("UPLOAD")),
        "{out:?}"
    );
    let out = same_on_host_and_in_a_container(
        "version: 0.2\nphases:\n  install:\n    commands: ['false']\n    finally: [echo install-finally]\n  build:\n    commands: [echo never]\n",
        &[],
        1,
    );
    assert!(out.contains(&"install-finally".to_string()), "{out:?}");
    assert!(
        !out.iter().any(|l| l.contains("PRE_BUILD") || l == "never"),
        "{out:?}"
    );
}

#[test]
fn the_shell_model_matches_the_host() {
    let out = same_on_host_and_in_a_container(
        "version: 0.2\nphases:\n  build:\n    commands:\n\
         \x20     - 'f() { echo hi; }; set -e; trap \"echo trapped\" EXIT; cd /; X=kept'\n\
         \x20     - 'type f >/dev/null 2>&1 || echo no-function; false; echo after-false; pwd; echo $X'\n\
         \x20     - 'cd \"$CODEBUILD_SRC_DIR\"; LOST=1; exit 0'\n\
         \x20     - 'echo \"[$LOST]\"; false; true'\n",
        &[],
        0,
    );
    let printed: Vec<&str> = out
        .iter()
        .map(String::as_str)
        .filter(|l| !l.contains("Phase") && !l.contains("Entering"))
        .collect();
    assert_eq!(
        printed,
        ["trapped", "no-function", "after-false", "/", "kept", "[]"]
    );
}

#[test]
fn environment_precedence_and_codebuild_variables_match_the_host() {
    let env_file = Sandbox::new();
    let path = env_file.write("project.env", "FROM_FILE=file\nBOTH=file\nOVER=file\n");
    let path = path.display().to_string();
    let out = same_on_host_and_in_a_container(
        "version: 0.2\nenv:\n  variables:\n    FROM_SPEC: spec\n    BOTH: spec\n    CODEBUILD_CI: from-spec\n  exported-variables: [MADE]\n\
         phases:\n  install:\n    commands: [export MADE=made-$FROM_SPEC, OVER=command]\n\
         \x20 build:\n    commands:\n\
         \x20     - echo \"$FROM_SPEC $FROM_FILE $BOTH $OVER $PINNED\"\n\
         \x20     - echo \"$CODEBUILD_SRC_DIR|$CODEBUILD_BUILD_SUCCEEDING|$CODEBUILD_LOCAL_BUILD|$CODEBUILD_CI|$AWS_REGION|$AWS_DEFAULT_REGION|$CODEBUILD_BUILD_NUMBER|${#CODEBUILD_START_TIME}\"\n\
         \x20     - echo $CODEBUILD_BUILD_ID | grep -Eq '^src:[0-9a-f-]{36}$' && echo id-ok\n\
         \x20     - echo $CODEBUILD_BUILD_ARN | grep -q ':000000000000:build/src:' && echo arn-ok\n",
        &["-e", &path, "--env-var", "PINNED=pinned"],
        0,
    );
    let text = out.join("\n");
    assert!(text.contains("spec file file command pinned"), "{text}");
    assert!(
        text.contains("$SRC|1|true|true|us-east-1|us-east-1|1|13"),
        "{text}"
    );
    assert!(text.contains("id-ok") && text.contains("arn-ok"), "{text}");
}

#[test]
fn exported_variables_and_version_0_1_match_the_host() {
    let _serial = serial();
    let before = agent_containers();
    let spec = "version: 0.2\nenv:\n  exported-variables: [MADE, NEVER_SET]\nphases:\n  build:\n    commands: [export MADE=yes-$((1+1))]\n";
    let host = Sandbox::new();
    host.write("src/buildspec.yml", spec);
    let host_env = host.path().join("host.json");
    let container_env = host.path().join("container.json");
    host.run([
        "run",
        "-s",
        &host.path().join("src").display().to_string(),
        "--output-env",
        &host_env.display().to_string(),
    ])
    .expect_code(0);
    build(
        &Sandbox::new(),
        spec,
        &["--output-env", &container_env.display().to_string()],
    )
    .expect_code(0);
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    assert_eq!(read(&host_env), read(&container_env));
    assert_eq!(read(&container_env)["MADE"], "yes-2");
    assert_eq!(read(&container_env)["NEVER_SET"], "");
    assert_no_container_left(&before);
    drop(_serial);

    let out = same_on_host_and_in_a_container(
        "version: 0.1\nphases:\n  build:\n    commands: ['cd / && export A=1', 'pwd | grep -q ^/$ || echo fresh-dir; echo \"[$A]\"']\n",
        &[],
        0,
    );
    assert!(
        out.contains(&"fresh-dir".to_string()) && out.contains(&"[]".to_string()),
        "{out:?}"
    );
}

#[test]
fn retries_and_run_as_match_the_host() {
    // The counter lives in the source directory, which a retry keeps.
    let out = same_on_host_and_in_a_container(
        "version: 0.2\nphases:\n  build:\n    on-failure: RETRY-2\n    commands:\n      - echo x >> tries; wc -l < tries | tr -d ' '\n      - test $(wc -l < tries) -ge 2\n",
        &[],
        0,
    );
    assert_eq!(
        out.iter()
            .filter(|l| l.as_str() == "1" || l.as_str() == "2")
            .count(),
        2,
        "{out:?}"
    );
    let out = same_on_host_and_in_a_container(
        "version: 0.2\nrun-as: nobody\nphases:\n  build:\n    commands: ['echo $(id -u) $(id -g)']\n",
        &[],
        0,
    );
    assert!(out.contains(&"65534 65534".to_string()), "{out:?}");
}

#[test]
fn timeouts_match_the_host() {
    // Each side on its own terms: what a killed `sleep` leaves in the log may differ with load.
    let _serial = serial();
    let before = agent_containers();
    let (host, container) = on_host_and_in_a_container(
        "version: 0.2\nphases:\n  build:\n    commands: [echo started, sleep 600]\n    finally: [echo never]\n  post_build:\n    commands: [echo never]\n",
        &["--timeout", "3s", "--grace", "1s"],
    );
    for run in [&host, &container] {
        run.expect_code(124);
        let out = outcome(run);
        assert!(out.contains(&"started".to_string()), "{out:?}");
        assert!(!out.iter().any(|l| l == "never"), "{out:?}");
        assert!(
            out.iter().any(|l| l.contains("BUILD State: TIMED_OUT")),
            "{out:?}"
        );
    }
    assert_no_container_left(&before);
}

// ---------------------------------------------------------------------------------------------
// runtime-versions, `docker build` with -d, codebuild-hash-files, the agent as an image.

/// A catalogue like CodeBuild's images have: named versions, a `default` entry, `requires`.
const RUNTIMES_YML: &str = "version: 0.1\n\
runtimes:\n\
\x20 tool:\n\
\x20   versions:\n\
\x20     1.2:\n\
\x20       commands:\n\
\x20         - echo \"Installing tool version 1.2 ...\"\n\
\x20     1.10:\n\
\x20       commands:\n\
\x20         - echo \"Installing tool version 1.10 ...\"\n\
\x20         - echo tool-1.10 > /tmp/runtime-marker\n\
\x20         - export TOOL_HOME=/opt/tool-1.10\n\
\x20 lang:\n\
\x20   versions:\n\
\x20     default:\n\
\x20       requires:\n\
\x20         tool: [\"1.2\"]\n\
\x20       commands:\n\
\x20         - export LANG_HOME=/opt/lang-$VERSION\n";

fn runtimes_image() -> TestImage {
    TestImage::build(
        "runtimes",
        &[(
            "/codebuild/image/config/runtimes.yml".to_string(),
            Content::Text(RUNTIMES_YML.to_string()),
        )],
        "",
    )
}

#[test]
fn runtime_versions_run_the_images_commands_before_install() {
    let _serial = serial();
    let before = agent_containers();
    let image = runtimes_image();
    let s = Sandbox::new();
    let run = build_in(
        image.tag(),
        &s,
        "version: 0.2\nphases:\n  install:\n    runtime-versions:\n      tool: 1\n    commands:\n      - cat /tmp/runtime-marker\n\
         \x20 build:\n    commands: ['echo \"$TOOL_HOME [${VERSION-unset}]\"']\n",
        &[],
    );
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("Selecting 'tool' runtime version '1.10' based on manual selections..."),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Running command echo tool-1.10 > /tmp/runtime-marker"),
        "{}",
        run.stdout
    );
    assert_eq!(
        printed(&run),
        [
            "Installing tool version 1.10 ...",
            "tool-1.10",
            "/opt/tool-1.10 [unset]"
        ]
    );

    // A `default` entry gets the version as $VERSION, after what it `requires`; VERSION is the
    // build's own again afterwards.
    let run = build_in(
        image.tag(),
        &Sandbox::new(),
        "version: 0.2\nenv:\n  variables:\n    VERSION: mine\nphases:\n  install:\n    runtime-versions:\n      lang: $WANTED\n\
         \x20 build:\n    commands: ['echo \"$LANG_HOME $VERSION\"']\n",
        &["--env-var", "WANTED=3.4.5"],
    );
    run.expect_code(0);
    assert!(run
        .stdout
        .contains("Selecting 'tool' runtime version '1.2'"));
    assert!(run
        .stdout
        .contains("Selecting 'lang' runtime version '3.4.5'"));
    assert_eq!(
        printed(&run),
        ["Installing tool version 1.2 ...", "/opt/lang-3.4.5 mine"]
    );
    assert_no_container_left(&before);
}

#[test]
fn an_unknown_runtime_or_version_fails_install_with_what_the_image_has() {
    let _serial = serial();
    let before = agent_containers();
    let image = runtimes_image();
    let run = build_in(
        image.tag(),
        &Sandbox::new(),
        "version: 0.2\nphases:\n  install:\n    runtime-versions:\n      nodejs: 20\n    finally: [echo install-finally]\n  build:\n    commands: [echo never]\n",
        &[],
    );
    run.expect_code(1);
    assert!(
        run.stdout.contains("Phase context status code: YAML_FILE_ERROR Message: Unknown runtime named 'nodejs'. This build image has the following runtimes: lang, tool"),
        "{}",
        run.stdout
    );
    assert_eq!(printed(&run), ["install-finally"]);
    let run = build_in(
        image.tag(),
        &Sandbox::new(),
        "version: 0.2\nphases:\n  install:\n    runtime-versions:\n      tool: 2\n",
        &[],
    );
    run.expect_code(1);
    assert!(
        run.stdout.contains("Unknown runtime version named '2' of tool. This build image has the following versions of tool: 1.2, 1.10"),
        "{}",
        run.stdout
    );
    assert_no_container_left(&before);
}

#[test]
fn runtime_versions_without_a_catalogue_are_a_warning_in_a_container_and_on_the_host() {
    let spec = "version: 0.2\nphases:\n  install:\n    runtime-versions:\n      java: corretto17\n    commands: [echo installed]\n";
    let warning = "Warning: Skipping install of runtimes. Runtime version selection is not supported by this build image (it has no /codebuild/image/config/runtimes.yml)";
    assert!(
        !std::path::Path::new("/codebuild/image/config/runtimes.yml").exists(),
        "this machine has a runtimes.yml: the host half of this test expects none"
    );
    let out = same_on_host_and_in_a_container(spec, &[], 0);
    assert!(out.contains(&"installed".to_string()), "{out:?}");
    let (host, container) = on_host_and_in_a_container(spec, &[]);
    assert!(host.stdout.contains(warning), "{}", host.stdout);
    assert!(container.stdout.contains(warning), "{}", container.stdout);
}

/// The base image with the docker CLI of this machine and the shared libraries it and the
/// agent need (the same glibc as here, so the agent's executable runs in it too).
fn tools_image() -> TestImage {
    let mut files = with_libraries(&services::tool("docker"));
    files.extend(
        with_libraries(&buildagent_tests::binary())
            .into_iter()
            .skip(1),
    );
    TestImage::build("tools", &files, "")
}

#[test]
fn docker_build_in_a_privileged_build_uses_the_hosts_engine() {
    let _serial = serial();
    let before = agent_containers();
    let image = tools_image();
    let built = format!("{}-inner", image.tag().trim_end_matches(":latest"));
    let _remove = RemoveImages(vec![built.clone()]);
    let spec = format!(
        "version: 0.2\nphases:\n  build:\n    commands:\n\
         \x20     - mkdir ctx && echo inside > ctx/file && printf 'FROM {}\\nCOPY file /file\\nLABEL made-by=buildagent-test\\n' > ctx/Dockerfile\n\
         \x20     - DOCKER_BUILDKIT=0 docker build -q -t {built} ctx\n",
        services::base_image()
    );
    let run = build_in(image.tag(), &Sandbox::new(), &spec, &["-d"]);
    // Some engines cannot grant a privileged container its capabilities (the test machine's runs
    // in a sandbox that has fewer): `-d` then fails the build's start with a clear message, and
    // the image's client is shown to build through the socket with the docker CLI instead.
    let privileged = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "host",
            "--privileged",
            image.tag(),
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    if privileged {
        run.expect_code(0);
    } else {
        run.expect_code(3);
        assert!(
            run.stderr.contains("-d asks for a privileged container"),
            "{}",
            run.stderr
        );
        let s = Sandbox::new();
        s.write("ctx/file", "inside\n");
        s.write(
            "ctx/Dockerfile",
            format!(
                "FROM {}\nCOPY file /file\nLABEL made-by=buildagent-test\n",
                services::base_image()
            ),
        );
        let ctx = s.path().join("ctx").display().to_string();
        let out = Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "host",
                "-e",
                "DOCKER_BUILDKIT=0",
            ])
            .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
            .args(["-v", &format!("{ctx}:{ctx}"), image.tag()])
            .args(["docker", "build", "-q", "-t", &built, &ctx])
            .output()
            .unwrap();
        Run::from(out).expect_code(0);
    }
    let inspect = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"made-by\"}}",
            &built,
        ])
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", run.stdout);
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        "buildagent-test"
    );

    // Without -d the engine's socket is not there.
    let run = build_in(
        image.tag(),
        &Sandbox::new(),
        "version: 0.2\nphases:\n  build:\n    commands: [docker version]\n",
        &[],
    );
    run.expect_code(1);
    assert_no_container_left(&before);
}

#[test]
fn codebuild_hash_files_runs_in_an_image_with_a_compatible_libc_and_warns_otherwise() {
    let _serial = serial();
    let before = agent_containers();
    let image = tools_image();
    let spec = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo a > a.txt\n      - codebuild-hash-files '*.txt' buildspec.yml\n\
                cache:\n  key: k-$(codebuild-hash-files a.txt)\n  paths: [a.txt]\n";
    let host = Sandbox::new();
    host.write("src/buildspec.yml", spec);
    let cache = host.path().join("cache");
    let cache_arg = cache.display().to_string();
    let on_host = host.run([
        "run",
        "--log-format",
        "codebuild",
        "--cache-dir",
        &cache_arg,
        "-s",
        &host.path().join("src").display().to_string(),
    ]);
    on_host.expect_code(0);
    let in_container = build_in(
        image.tag(),
        &Sandbox::new(),
        spec,
        &["--cache-dir", &cache_arg],
    );
    in_container.expect_code(0);
    let hash = printed(&in_container)[0].to_string();
    assert_eq!(hash.len(), 64, "{}", in_container.stdout);
    assert_eq!(printed(&on_host), printed(&in_container));
    assert!(!in_container
        .stdout
        .contains("codebuild-hash-files is not available"));
    // Both saved the cache under the same key, made by the helper in the key's expansion.
    let keys: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/keys/k-"))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}\n{}", in_container.stdout);

    // The busybox image has no glibc: the build says so and goes on without the helper.
    let run = build(&Sandbox::new(), "version: 0.2\nphases:\n  build:\n    commands: ['codebuild-hash-files buildspec.yml || echo missing']\n", &[]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("Warning: codebuild-hash-files is not available: the agent's executable")
            && run.stdout.contains("does not run in the image"),
        "{}",
        run.stdout
    );
    // The shell's complaint (stderr) and the echo (stdout) may come in either order.
    assert!(printed(&run).contains(&"missing"), "{}", run.stdout);
    assert_no_container_left(&before);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// The agent as an image without the internet: its built executable and the libraries it needs on
/// the base image (the repository's Dockerfile needs the `rust` and `debian` images from Docker
/// Hub). The image runs a build of a mounted source.
#[test]
fn the_agent_runs_from_an_image_made_of_its_built_executable() {
    let binary = buildagent_tests::binary();
    let mut files = with_libraries(&binary);
    files[0].0 = "/usr/local/bin/buildagent".to_string();
    let image = TestImage::build(
        "agent",
        &files,
        "WORKDIR /workspace\nENTRYPOINT [\"/usr/local/bin/buildagent\"]\nCMD [\"--help\"]",
    );
    let s = Sandbox::new();
    s.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [echo \"built in $CODEBUILD_SRC_DIR\"]\n",
    );
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "host", "-v"])
        .arg(format!("{}:/workspace", s.path().join("src").display()))
        .args([image.tag(), "run", "--log-format", "codebuild", "-m"])
        .output()
        .unwrap();
    let run = Run::from(out);
    run.expect_code(0);
    assert_eq!(printed(&run), ["built in /workspace"]);
}

#[test]
fn lines_written_in_pieces_on_both_streams_arrive_whole_from_a_container() {
    let _serial = serial();
    let before = agent_containers();
    let s = Sandbox::new();
    services::docker();
    s.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - \
         for i in $(seq 1 100); do printf \"out-$i \"; printf \"err-$i \" >&2; printf 'a '; \
         printf 'b ' >&2; echo end; echo end >&2; done\n",
    );
    let src = s.path().join("src").display().to_string();
    let image = services::base_image();
    let run = s.run(["run", "--log-format", "json", "-s", &src, "-i", &image]);
    run.expect_code(0);
    let mut counts = [0, 0];
    for line in run.stdout.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        if event["type"] != "output" {
            continue;
        }
        let text = event["bytes"].as_str().unwrap();
        assert!(
            text.ends_with('\n'),
            "a partial line was passed on: {text:?}"
        );
        let (name, index) = match event["stream"].as_str().unwrap() {
            "stdout" => ("out-{} a end", 0),
            _ => ("err-{} b end", 1),
        };
        for line in text.lines() {
            counts[index] += 1;
            assert_eq!(line, name.replace("{}", &counts[index].to_string()));
        }
    }
    assert_eq!(counts, [100, 100]);
    assert_no_container_left(&before);
}
