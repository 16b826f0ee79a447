//! `buildagent run` on the host: every rule of decisions.md "Executing commands" and
//! "Phases and status", through the real binary and real shells.

use std::process::Stdio;
use std::time::{Duration, Instant};

use buildagent_tests::{alive, redact_log, Run, Sandbox};

/// Writes `spec` as the sandbox's buildspec.yml and runs it in place (`-m`) with `args`.
fn build(sandbox: &Sandbox, spec: &str, args: &[&str]) -> Run {
    sandbox.write("buildspec.yml", spec);
    let mut all = vec!["run", "-m"];
    if !args.contains(&"--log-format") {
        all.extend(["--log-format", "codebuild"]);
    }
    all.extend_from_slice(args);
    sandbox.run(all)
}

/// The lines the build's commands printed (everything not starting with `[Container]`).
fn printed(run: &Run) -> Vec<&str> {
    run.stdout
        .lines()
        .filter(|l| !l.starts_with("[Container]") && !l.is_empty())
        .collect()
}

fn phase_lines(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter_map(|l| {
            l.split_once("Phase complete: ")
                .map(|(_, rest)| rest.to_string())
        })
        .collect()
}

#[test]
fn phases_run_in_the_fixed_order_whatever_the_file_says() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  post_build:\n    commands: [echo post]\n  build:\n    commands: [echo build]\n  install:\n    commands: [echo install]\n",
        &[],
    );
    run.expect_code(0);
    assert_eq!(printed(&run), ["install", "build", "post"]);
    assert_eq!(
        phase_lines(&run),
        [
            "DOWNLOAD_SOURCE State: SUCCEEDED",
            "INSTALL State: SUCCEEDED",
            "PRE_BUILD State: SUCCEEDED",
            "BUILD State: SUCCEEDED",
            "POST_BUILD State: SUCCEEDED",
            "UPLOAD_ARTIFACTS State: SUCCEEDED"
        ]
    );
}

#[test]
fn cd_assignments_and_exports_persist_across_commands_and_phases() {
    let s = Sandbox::new();
    std::fs::create_dir(s.path().join("sub")).unwrap();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  pre_build:\n    commands:\n      - cd sub\n      - PLAIN=1\n      - export EXPORTED=2\n      - unset HOME\n  build:\n    commands:\n      - 'echo \"$(basename \"$PWD\") $PLAIN $EXPORTED ${HOME:-unset}\"'\n",
        &[],
    );
    run.expect_code(0);
    assert_eq!(printed(&run), ["sub 1 2 unset"]);
}

#[test]
fn functions_traps_and_set_e_do_not_persist() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - 'myfn() { echo hi; }; set -e'\n      - false; echo after-false\n      - type myfn >/dev/null 2>&1 || echo no-function\n",
        &[],
    );
    run.expect_code(0);
    assert_eq!(printed(&run), ["after-false", "no-function"]);
}

#[test]
fn exit_ends_only_that_command_and_loses_its_changes() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - export A=1 && exit 0\n      - echo ${A:-unset}\n",
        &[],
    );
    run.expect_code(0);
    assert_eq!(printed(&run), ["unset"]);
}

#[test]
fn a_commands_status_is_its_last_statements() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - false; true\n      - false | cat\n      - echo reached\n",
        &[],
    );
    run.expect_code(0);
    assert_eq!(printed(&run), ["reached"]);
}

#[test]
fn user_code_starts_on_line_4() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - nosuchcommand-xyz\n",
        &[],
    );
    run.expect_code(1);
    assert!(
        run.stdout
            .contains("script.sh: 4: nosuchcommand-xyz: not found")
            || run.stdout.contains("script.sh: line 4: nosuchcommand-xyz"),
        "{}",
        run.stdout
    );
}

#[test]
fn version_0_1_starts_every_command_fresh() {
    let s = Sandbox::new();
    std::fs::create_dir(s.path().join("sub")).unwrap();
    let run = build(
        &s,
        "version: 0.1\nphases:\n  build:\n    commands:\n      - cd sub; export X=1\n      - 'echo \"$(basename \"$PWD\") ${X:-unset}\"'\n",
        &[],
    );
    run.expect_code(0);
    let dir = s.path().file_name().unwrap().to_string_lossy().to_string();
    assert_eq!(printed(&run), [format!("{dir} unset")]);
}

#[test]
fn a_background_process_does_not_hang_the_build_and_is_ended_with_it() {
    let s = Sandbox::new();
    let started = Instant::now();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - sleep 600 & echo $! > bg.pid\n      - echo next\n",
        &["--grace", "2s"],
    );
    run.expect_code(0);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the build waited for the background process"
    );
    assert_eq!(printed(&run).first(), Some(&"next"));
    assert!(
        run.stdout
            .contains("Ended 1 process(es) the build left running"),
        "{}",
        run.stdout
    );
    let pid: i32 = std::fs::read_to_string(s.path().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "the background sleep {pid} survived the build");
}

#[test]
fn install_or_pre_build_failure_skips_everything_after_it() {
    for phase in ["install", "pre_build"] {
        let s = Sandbox::new();
        let run = build(
            &s,
            &format!(
                "version: 0.2\nphases:\n  {phase}:\n    commands: [echo in-{phase}, 'false', echo skipped]\n  build:\n    commands: [echo build]\n  post_build:\n    commands: [echo post]\nartifacts:\n  files: ['**/*']\n"
            ),
            &[],
        );
        run.expect_code(1);
        assert_eq!(printed(&run), [format!("in-{phase}")]);
        let phases = phase_lines(&run);
        assert_eq!(
            phases.last().unwrap(),
            &format!("{} State: FAILED", phase.to_uppercase())
        );
        assert!(!run.stdout.contains("UPLOAD_ARTIFACTS"), "{}", run.stdout);
    }
}

#[test]
fn build_failure_still_runs_post_build_and_upload_artifacts() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: ['false', echo two]\n    finally: [echo fin $CODEBUILD_BUILD_SUCCEEDING]\n  post_build:\n    commands: [echo post $CODEBUILD_BUILD_SUCCEEDING]\n",
        &[],
    );
    run.expect_code(1);
    assert_eq!(printed(&run), ["fin 0", "post 0"]);
    assert_eq!(
        &phase_lines(&run)[3..],
        [
            "BUILD State: FAILED",
            "POST_BUILD State: SUCCEEDED",
            "UPLOAD_ARTIFACTS State: SUCCEEDED"
        ]
    );
    assert!(run.stdout.contains(
        "Phase context status code: COMMAND_EXECUTION_ERROR Message: Error while executing command: false. Reason: exit status 1"
    ));
    assert!(run
        .stdout
        .contains("Command did not exit successfully false exit status 1"));
}

#[test]
fn post_build_failure_still_uploads_artifacts() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  post_build:\n    commands: ['exit 3']\n",
        &[],
    );
    run.expect_code(1);
    assert_eq!(
        &phase_lines(&run)[4..],
        [
            "POST_BUILD State: FAILED",
            "UPLOAD_ARTIFACTS State: SUCCEEDED"
        ]
    );
}

#[test]
fn a_failing_finally_command_skips_the_rest_of_finally_and_fails_the_phase() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [echo ok $CODEBUILD_BUILD_SUCCEEDING]\n    finally: ['false', echo after]\n  post_build:\n    commands: [echo post $CODEBUILD_BUILD_SUCCEEDING]\n",
        &[],
    );
    run.expect_code(1);
    assert_eq!(printed(&run), ["ok 1", "post 0"]);
    assert!(phase_lines(&run).contains(&"BUILD State: FAILED".to_string()));
}

#[test]
fn on_failure_abort_stops_everything_including_upload() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    on-failure: ABORT\n    commands: ['false']\n  post_build:\n    commands: [echo post]\n",
        &[],
    );
    run.expect_code(1);
    assert!(printed(&run).is_empty(), "{}", run.stdout);
    assert_eq!(
        phase_lines(&run).last().unwrap(),
        "BUILD State: FAILED",
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("Entering phase POST_BUILD"),
        "{}",
        run.stdout
    );
}

#[test]
fn on_failure_continue_goes_on_but_the_build_fails() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  pre_build:\n    on-failure: CONTINUE\n    commands: ['false']\n  build:\n    commands: [echo build $CODEBUILD_BUILD_SUCCEEDING]\n",
        &[],
    );
    run.expect_code(1);
    assert_eq!(printed(&run), ["build 0"]);
    assert!(phase_lines(&run).contains(&"PRE_BUILD State: FAILED".to_string()));
    assert!(phase_lines(&run).contains(&"BUILD State: SUCCEEDED".to_string()));
}

#[test]
fn on_failure_retry_reruns_the_build_until_it_passes() {
    let s = Sandbox::new();
    let counter = s.path().join("attempts");
    let spec = format!(
        "version: 0.2\nphases:\n  build:\n    on-failure: RETRY-2\n    commands:\n      - echo x >> {c}\n      - test $(wc -l < {c}) -ge 2\n",
        c = counter.display()
    );
    let run = build(&s, &spec, &[]);
    run.expect_code(0);
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        2
    );
    assert!(
        run.stdout.contains("Retrying the build: attempt 2 of 3"),
        "{}",
        run.stdout
    );
}

#[test]
fn on_failure_retry_with_a_regex_retries_only_matching_failures() {
    let s = Sandbox::new();
    let counter = s.path().join("attempts");
    let spec = format!(
        "version: 0.2\nphases:\n  build:\n    on-failure: RETRY-3-.*connection timed out.*\n    commands:\n      - echo x >> {c}\n      - echo permission denied; false\n",
        c = counter.display()
    );
    build(&s, &spec, &[]).expect_code(1);
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        1,
        "no retry"
    );
    let spec = format!(
        "version: 0.2\nphases:\n  build:\n    on-failure: RETRY-2-.*connection timed out.*\n    commands:\n      - echo x >> {c}2\n      - echo connection timed out; false\n",
        c = counter.display()
    );
    build(&s, &spec, &[]).expect_code(1);
    let attempts = std::fs::read_to_string(format!("{}2", counter.display())).unwrap();
    assert_eq!(attempts.lines().count(), 3, "the first run and two retries");
}

#[test]
fn a_timeout_ends_the_build_and_its_grandchildren() {
    let s = Sandbox::new();
    let started = Instant::now();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - sh -c 'echo $$ > grandchild.pid; exec sleep 600'\n    finally: [echo finally-ran]\n  post_build:\n    commands: [echo post]\n",
        &["--timeout", "2s", "--grace", "1s"],
    );
    run.expect_code(124);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        phase_lines(&run).contains(&"BUILD State: TIMED_OUT".to_string()),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Build timed out: the running command was stopped"),
        "{}",
        run.stdout
    );
    assert!(
        printed(&run).is_empty(),
        "nothing runs after a timeout: {}",
        run.stdout
    );
    let pid: i32 = std::fs::read_to_string(s.path().join("grandchild.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "grandchild {pid} survived the timeout");
}

#[test]
fn sigint_stops_the_build_and_a_second_one_kills_at_once() {
    for twice in [false, true] {
        let s = Sandbox::new();
        s.write(
            "buildspec.yml",
            "version: 0.2\nphases:\n  build:\n    commands:\n      - sh -c 'trap \"\" TERM; echo $$ > child.pid; while :; do sleep 1; done'\n",
        );
        let child = s
            .command(["run", "-m", "--log-format", "codebuild", "--grace", "30s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid_file = s.path().join("child.pid");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pid_file.exists()
            || std::fs::read_to_string(&pid_file)
                .unwrap()
                .trim()
                .is_empty()
        {
            assert!(Instant::now() < deadline, "the command never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let agent = child.id() as i32;
        let started = Instant::now();
        unsafe_kill(agent, "INT");
        if twice {
            std::thread::sleep(Duration::from_millis(300));
            unsafe_kill(agent, "INT");
        }
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(130));
        if twice {
            // The command ignores SIGTERM: only the second SIGINT's SIGKILL ends it before the grace.
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "second SIGINT did not kill at once"
            );
        } else {
            assert!(
                started.elapsed() >= Duration::from_secs(25),
                "the grace period was not given"
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("BUILD State: STOPPED"), "{stdout}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!alive(pid), "command {pid} survived the stop");
    }
}

/// Sends a signal with the `kill` utility (the tests do not link a signals crate).
fn unsafe_kill(pid: i32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn environment_precedence() {
    let s = Sandbox::new();
    s.write("project.env", "A=from-file\nB=\"quoted\"\n");
    let run = build(
        &s,
        "version: 0.2\nenv:\n  variables:\n    A: from-buildspec\n    B: from-buildspec\n    C: from-buildspec\n    D: from-buildspec\nphases:\n  build:\n    commands:\n      - D=from-command\n      - echo \"$A $B $C $D\"\n",
        &["-e", "project.env", "--env-var", "C=from-override"],
    );
    run.expect_code(0);
    assert_eq!(
        printed(&run),
        ["from-file \"quoted\" from-override from-command"]
    );
}

#[test]
fn codebuild_variables_are_set() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"$CODEBUILD_SRC_DIR|$CODEBUILD_BUILD_SUCCEEDING|$CODEBUILD_LOCAL_BUILD|$CODEBUILD_CI|$AWS_REGION|${#CODEBUILD_START_TIME}\"\n      - echo $CODEBUILD_BUILD_ID | grep -Eq '^[^:]+:[0-9a-f-]{36}$' && echo id-ok\n",
        &[],
    );
    run.expect_code(0);
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".into());
    assert_eq!(
        printed(&run),
        [
            format!("{}|1|true|true|{region}|13", s.path().display()),
            "id-ok".to_string()
        ]
    );
}

#[test]
fn secrets_are_masked_across_writes_in_every_output() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - printf 'token=hunt'; sleep 0.2; printf 'er2\\n'\n      - echo \"$TOKEN\" >&2\n      - echo $TOKEN\n",
        &["--secret", "TOKEN=hunter2", "--log-file", "build.log"],
    );
    run.expect_code(0);
    let log = std::fs::read_to_string(s.path().join("build.log")).unwrap();
    for text in [&run.stdout, &run.stderr, &log] {
        assert!(
            !text.contains("hunter2") && !text.contains("hunt\n"),
            "{text}"
        );
    }
    assert!(run.stdout.contains("token=***\n"), "{}", run.stdout);
    assert!(log.contains("Running command echo $TOKEN\n***\n"), "{log}");
    let json = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [echo $TOKEN]\n",
        &["--secret", "TOKEN=hunter2", "--log-format", "json"],
    );
    assert!(!json.stdout.contains("hunter2"), "{}", json.stdout);
}

#[test]
fn run_as_switches_user_and_groups() {
    assert!(nix_is_root(), "run-as tests need root (CI runs as root)");
    let user = "ba-runas-test";
    let _ = std::process::Command::new("useradd")
        .args(["-M", user])
        .status();
    let s = Sandbox::new();
    let run = build(
        &s,
        &format!("version: 0.2\nrun-as: {user}\nphases:\n  install:\n    run-as: root\n    commands: [whoami]\n  build:\n    commands: [whoami, 'export X=kept', 'echo $X']\n"),
        &[],
    );
    run.expect_code(0);
    assert_eq!(printed(&run), ["root", user, "kept"]);
    let run = build(
        &s,
        "version: 0.2\nrun-as: no-such-user-xyz\nphases:\n  build:\n    commands: [whoami]\n",
        &[],
    );
    run.expect_code(1);
    assert!(run.stdout.contains("no-such-user-xyz"), "{}", run.stdout);
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn exit_statuses_for_invalid_input() {
    let s = Sandbox::new();
    build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo a: b\n",
        &[],
    )
    .expect_code(2);
    let empty = Sandbox::new();
    let run = empty.run(["run"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("YAML file does not exist"),
        "{}",
        run.stderr
    );
    build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [true]\n",
        &["--timeout", "soon"],
    )
    .expect_code(2);
    build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [true]\n",
        &["--env-var", "NOEQUALS"],
    )
    .expect_code(2);
}

#[test]
fn the_build_runs_in_a_copy_unless_mount_source() {
    let s = Sandbox::new();
    s.write(
        "buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [touch made-by-build, pwd]\n",
    );
    let run = s.run(["run", "--log-format", "codebuild"]);
    run.expect_code(0);
    assert!(
        !s.path().join("made-by-build").exists(),
        "the copy must not write into the source"
    );
    assert!(
        printed(&run)[0].starts_with("/tmp/buildagent-src-"),
        "{}",
        run.stdout
    );
    let run = s.run(["run", "-m", "--log-format", "codebuild"]);
    run.expect_code(0);
    assert!(s.path().join("made-by-build").exists());
}

#[test]
fn codebuild_log_format_is_exact() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo hello\n      - 'false'\n",
        &["--log-file", "build.log"],
    );
    run.expect_code(1);
    let log = std::fs::read_to_string(s.path().join("build.log")).unwrap();
    assert_eq!(log, run.stdout, "the log file holds the same lines");
    let dir = s.path().display().to_string();
    let expected = format!(
        "[Container] [TIME] Running on buildagent {version} (build [ID])
[Container] [TIME] Phase is DOWNLOAD_SOURCE
[Container] [TIME] CODEBUILD_SRC_DIR={dir}
[Container] [TIME] YAML location is {dir}/buildspec.yml
[Container] [TIME] Processing environment variables
[Container] [TIME] Moving to directory {dir}
[Container] [TIME] Phases found in YAML: 1
[Container] [TIME]  BUILD: 2 commands
[Container] [TIME] Cache is not defined in the buildspec
[Container] [TIME] Phase complete: DOWNLOAD_SOURCE State: SUCCEEDED
[Container] [TIME] Phase context status code:  Message: 
[Container] [TIME] Entering phase INSTALL
[Container] [TIME] Phase complete: INSTALL State: SUCCEEDED
[Container] [TIME] Phase context status code:  Message: 
[Container] [TIME] Entering phase PRE_BUILD
[Container] [TIME] Phase complete: PRE_BUILD State: SUCCEEDED
[Container] [TIME] Phase context status code:  Message: 
[Container] [TIME] Entering phase BUILD
[Container] [TIME] Running command echo hello
hello

[Container] [TIME] Running command false

[Container] [TIME] Command did not exit successfully false exit status 1
[Container] [TIME] Phase complete: BUILD State: FAILED
[Container] [TIME] Phase context status code: COMMAND_EXECUTION_ERROR Message: Error while executing command: false. Reason: exit status 1
[Container] [TIME] Entering phase POST_BUILD
[Container] [TIME] Phase complete: POST_BUILD State: SUCCEEDED
[Container] [TIME] Phase context status code:  Message: 
[Container] [TIME] Phase complete: UPLOAD_ARTIFACTS State: SUCCEEDED
[Container] [TIME] Phase context status code:  Message: 
",
        version = env!("CARGO_PKG_VERSION")
    );
    assert_eq!(redact_log(&run.stdout), expected);
}

#[test]
fn json_events_are_one_object_per_line_with_a_schema_version() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [echo hi]\n",
        &["--log-format", "json"],
    );
    run.expect_code(0);
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.iter().all(|e| e["schema"] == 1), "{}", run.stdout);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"build_started"));
    assert_eq!(kinds.last(), Some(&"build_finished"));
    assert!(kinds.contains(&"output"));
    assert_eq!(events.last().unwrap()["status"], "SUCCEEDED");
}

#[test]
fn output_of_background_processes_is_not_lost() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands:\n      - (sleep 0.2; echo late-output) &\n      - sleep 1\n      - sh -c 'trap \"echo bye-from-background; exit 0\" TERM; echo started; while :; do sleep 0.1; done' &\n      - sleep 0.5\n",
        &["--grace", "5s", "--log-file", "build.log"],
    );
    run.expect_code(0);
    let log = std::fs::read_to_string(s.path().join("build.log")).unwrap();
    for text in [&run.stdout, &log] {
        assert!(text.contains("late-output\n"), "{text}");
        assert!(text.contains("started\n"), "{text}");
        // Written while the sweep ends the process, after the last command.
        assert!(text.contains("bye-from-background\n"), "{text}");
    }
}

#[test]
fn exported_variables_are_reported_masked_in_events_and_output_env() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nenv:\n  exported-variables: [IMAGE_TAG, NEVER_SET]\nphases:\n  build:\n    commands: ['IMAGE_TAG=v1-$TOKEN']\n  post_build:\n    commands: ['IMAGE_TAG=$IMAGE_TAG-final']\n",
        &["--secret", "TOKEN=s3cr3t", "--log-format", "json", "--output-env", "exported.json"],
    );
    run.expect_code(0);
    let event: serde_json::Value = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["type"] == "variables_exported")
        .expect("a variables_exported event");
    assert_eq!(
        event["variables"],
        serde_json::json!([{"name": "IMAGE_TAG", "value": "v1-***-final"}, {"name": "NEVER_SET", "value": ""}])
    );
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path().join("exported.json")).unwrap())
            .unwrap();
    assert_eq!(
        file,
        serde_json::json!({"IMAGE_TAG": "v1-***-final", "NEVER_SET": ""})
    );
    assert!(!run.stdout.contains("s3cr3t"));
}

#[test]
fn secondary_sources_get_their_own_variables() {
    let s = Sandbox::new();
    s.write("lib/marker.txt", "from the secondary source\n");
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: ['cat \"$CODEBUILD_SRC_DIR_lib/marker.txt\"']\n",
        &["-s", ".", "-s", "lib:lib"],
    );
    run.expect_code(0);
    assert_eq!(printed(&run), ["from the secondary source"]);
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: ['true']\n",
        &["-s", ".", "-s", "bad-id:lib"],
    );
    run.expect_code(2);
    assert!(
        run.stderr.contains("source identifier `bad-id`"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_agent_failing_to_work_is_a_fault() {
    let s = Sandbox::new();
    s.write(
        "buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: ['true']\n",
    );
    // No place for the source copy: the agent cannot do its job.
    let run = Run::from(
        s.command(["run", "--log-format", "codebuild"])
            .env("TMPDIR", s.path().join("no-such-dir"))
            .output()
            .unwrap(),
    );
    run.expect_code(3);
    assert!(
        run.stderr.contains("a directory for the source copy"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_retry_uses_the_failing_phases_count_and_does_not_copy_the_source_again() {
    let s = Sandbox::new();
    std::os::unix::fs::symlink("buildspec.yml", s.path().join("link.yml")).unwrap();
    let counter = s.path().join("attempts");
    s.write(
        "buildspec.yml",
        format!(
            "version: 0.2\nphases:\n  build:\n    on-failure: RETRY-1\n    commands:\n      - echo x >> {c}\n      - 'false'\n  post_build:\n    on-failure: RETRY-5\n    commands: ['true']\n",
            c = counter.display()
        ),
    );
    // Not -m: the source (with its symlink) is copied once, in the first DOWNLOAD_SOURCE.
    let run = s.run(["run", "--log-format", "codebuild"]);
    run.expect_code(1);
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        2,
        "one run and one retry"
    );
    assert_eq!(run.stdout.matches("Copied ").count(), 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("Retrying the build: attempt 2 of 2"),
        "{}",
        run.stdout
    );
}

#[test]
fn commands_start_with_default_signals_even_when_the_agent_ignores_some() {
    use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    use std::os::unix::process::CommandExt;
    // As a script's `buildagent run &` (SIGINT and SIGQUIT ignored) or `nohup` (SIGHUP) starts it,
    // with a blocked signal on top: the build's commands must still start as from a terminal.
    let s = Sandbox::new();
    s.write(
        "buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - trap\n      - grep -E '^Sig(Ign|Blk)' /proc/self/status\n",
    );
    let mut cmd = s.command(["run", "-m", "--log-format", "codebuild"]);
    // SAFETY: signal() and sigprocmask() are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGHUP] {
                signal(sig, SigHandler::SigIgn).map_err(std::io::Error::from)?;
            }
            let mut blocked = SigSet::empty();
            blocked.add(Signal::SIGUSR1);
            sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None)
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let run = Run::from(cmd.output().unwrap());
    run.expect_code(0);
    let masks: Vec<(&str, u64)> = printed(&run)
        .iter()
        .map(|l| {
            let (name, hex) = l.split_once(":\t").unwrap();
            (name, u64::from_str_radix(hex, 16).unwrap())
        })
        .collect();
    // Bits 31 and 32 are signals 32 and 33, which glibc keeps for its threads and will not let
    // anyone (the agent included) reset; the test harness itself starts with one of them ignored.
    let glibc_own = 0b11 << 31;
    assert_eq!(
        masks
            .iter()
            .map(|(n, m)| (*n, m & !glibc_own))
            .collect::<Vec<_>>(),
        [("SigBlk", 0), ("SigIgn", 0)],
        "{}",
        run.stdout
    );
}
