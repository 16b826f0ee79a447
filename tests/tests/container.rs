//! `buildagent run -i IMAGE`: the build inside a container of a build image, through the Docker
//! Engine the test script starts (no bridge: host network), with the busybox base image the
//! script makes locally. Every test also checks that no container is left behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    services::docker();
    s.write("src/buildspec.yml", spec);
    let image = services::base_image();
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
