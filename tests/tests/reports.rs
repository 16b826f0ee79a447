//! `buildagent run` with `reports`: report groups are collected after POST_BUILD (also when BUILD
//! failed, never after an INSTALL failure), summarised in the log and, with `-r DIR`, copied to
//! `DIR/<group>/` with `DIR/summary.json` (decisions.md "Artifacts, caches, reports").

use std::path::PathBuf;

use buildagent_tests::{Run, Sandbox};

const JUNIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="math" tests="3">
    <testcase name="adds" classname="math.Add" time="0.5"/>
    <testcase name="divides" classname="math.Div" time="0.25">
      <failure message="expected 2 got 3">trace</failure>
    </testcase>
    <testcase name="later" classname="math.Div"><skipped/></testcase>
  </testsuite>
</testsuites>
"#;

fn src(s: &Sandbox) -> PathBuf {
    s.path().join("src")
}

/// Runs `spec` in `src/` (in place) with the CodeBuild log and `args`.
fn build(s: &Sandbox, spec: &str, args: &[&str]) -> Run {
    s.write("src/buildspec.yml", spec);
    let mut all = vec![
        "run".to_string(),
        "-m".into(),
        "-s".into(),
        src(s).display().to_string(),
    ];
    if !args.contains(&"--log-format") {
        all.extend(["--log-format".into(), "codebuild".into()]);
    }
    all.extend(args.iter().map(|a| a.to_string()));
    s.run(all)
}

#[test]
fn junit_with_failures_is_summarised_copied_and_does_not_fail_the_build() {
    let s = Sandbox::new();
    s.write("src/reports/unit/math.xml", JUNIT);
    let out = s.path().join("out");
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nreports:\n  unit:\n    files: ['**/*.xml']\n    base-directory: reports\n",
        &["-r", out.to_str().unwrap()],
    );
    run.expect_code(0);
    let log = &run.stdout;
    assert!(
        log.contains(
            "Report group unit: 3 tests, 1 passed, 1 failed, 1 skipped, 0 errors (0.75 s)"
        ),
        "{log}"
    );
    // Processed in the UPLOAD_ARTIFACTS part of the log, after POST_BUILD.
    let post = log.find("Phase complete: POST_BUILD").expect("POST_BUILD");
    let summary_line = log.find("Report group unit:").unwrap();
    let upload = log
        .find("Phase complete: UPLOAD_ARTIFACTS")
        .expect("UPLOAD_ARTIFACTS");
    assert!(post < summary_line && summary_line < upload, "{log}");
    assert!(
        log.contains("Phase complete: BUILD State: SUCCEEDED"),
        "{log}"
    );

    assert_eq!(
        std::fs::read_to_string(out.join("unit/unit/math.xml")).unwrap(),
        JUNIT
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let group = &summary["groups"][0];
    assert_eq!(group["name"], "unit");
    assert_eq!(group["format"], "JUNITXML");
    assert_eq!(group["total"], 3);
    assert_eq!(group["passed"], 1);
    assert_eq!(group["failed"], 1);
    assert_eq!(group["skipped"], 1);
    assert_eq!(group["errors"], 0);
    assert_eq!(group["duration"], 0.75);
    assert_eq!(group["directory"], "unit");
    assert_eq!(group["files"], serde_json::json!(["unit/math.xml"]));
    assert_eq!(
        group["cases"][1],
        serde_json::json!({
            "name": "divides",
            "class": "math.Div",
            "status": "failed",
            "duration": 0.25,
            "message": "expected 2 got 3"
        })
    );
    assert_eq!(group["cases"][2]["status"], "skipped");
    assert_eq!(group["cases"][2]["duration"], serde_json::Value::Null);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn json_log_has_the_typed_event() {
    let s = Sandbox::new();
    s.write("src/junit.xml", JUNIT);
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nreports:\n  unit:\n    files: [junit.xml]\n",
        &["--log-format", "json"],
    );
    run.expect_code(0);
    let event = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["type"] == "report_group_finished")
        .expect("a report_group_finished event");
    assert_eq!(event["group"], "unit");
    assert_eq!(event["total"], 3);
    assert_eq!(event["failed"], 1);
    assert_eq!(event["files"], 1);
}

#[test]
fn missing_report_files_are_a_warning() {
    let s = Sandbox::new();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nreports:\n  unit:\n    files: ['build/test-results/*.xml']\n",
        &[],
    );
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("Warning: report group unit: no report files found"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Report group unit: 0 tests, 0 passed, 0 failed, 0 skipped, 0 errors"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_broken_report_is_a_warning_with_file_and_line() {
    let s = Sandbox::new();
    s.write("src/good.xml", JUNIT);
    s.write(
        "src/broken.xml",
        "<testsuites>\n  <testsuite>\n    <testcase name=\"a\">\n  </testsuite>\n</testsuites>\n",
    );
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nreports:\n  unit:\n    files: ['*.xml']\n",
        &[],
    );
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("Warning: report group unit: cannot parse broken.xml as JUNITXML at line 4"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Report group unit: 3 tests"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("SUCCEEDED"), "{}", run.stdout);
}

#[test]
fn a_failed_build_still_processes_reports() {
    let s = Sandbox::new();
    s.write("src/junit.xml", JUNIT);
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: ['false']\nreports:\n  unit:\n    files: [junit.xml]\n",
        &[],
    );
    assert_ne!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stdout.contains("Report group unit: 3 tests"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_install_failure_processes_no_reports() {
    let s = Sandbox::new();
    s.write("src/junit.xml", JUNIT);
    let out = s.path().join("out");
    let run = build(
        &s,
        "version: 0.2\nphases:\n  install:\n    commands: ['false']\nreports:\n  unit:\n    files: [junit.xml]\n",
        &["-r", out.to_str().unwrap()],
    );
    assert_ne!(run.code, Some(0), "{}", run.stdout);
    assert!(!run.stdout.contains("Report group"), "{}", run.stdout);
    assert!(!out.join("summary.json").exists());
}

#[test]
fn base_directory_variables_come_from_the_builds_final_environment() {
    let s = Sandbox::new();
    s.write("src/out/junit/math.xml", JUNIT);
    // REPORT_DIR exists only because a command set it: the engine passes the final environment.
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: ['REPORT_DIR=out/junit']\nreports:\n  unit:\n    files: ['*.xml']\n    base-directory: ${REPORT_DIR}\n",
        &[],
    );
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("Report group unit: 3 tests, 1 passed, 1 failed, 1 skipped"),
        "{}",
        run.stdout
    );
}
