//! `buildagent run --batch`: build-list, build-graph, build-matrix and build-fanout on the host
//! (and in containers with `-i`), through the real binary and real shells. The builds run in
//! copies of `src/`, so they write what the tests check to `$OUT`, a directory outside them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use buildagent_tests::images::{with_libraries, Content, TestImage};
use buildagent_tests::{alive, testdata, Run, Sandbox};

/// A sandbox with `src/` (holding `buildspec.yml`) and `out/`.
struct Batch {
    s: Sandbox,
}

impl Batch {
    fn new(spec: &str) -> Batch {
        let s = Sandbox::new();
        s.write("src/buildspec.yml", spec);
        std::fs::create_dir_all(s.path().join("out")).unwrap();
        Batch { s }
    }

    fn fixture(name: &str) -> Batch {
        let text = std::fs::read_to_string(testdata().join("batch").join(name)).unwrap();
        Batch::new(&text)
    }

    fn src(&self) -> PathBuf {
        self.s.path().join("src")
    }

    fn out(&self) -> PathBuf {
        self.s.path().join("out")
    }

    fn args(&self, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = vec!["run".into(), "--batch".into()];
        if !args.contains(&"--log-format") {
            all.extend(["--log-format".into(), "codebuild".into()]);
        }
        all.extend([
            "-s".into(),
            self.src().display().to_string(),
            "--env-var".into(),
            format!("OUT={}", self.out().display()),
            "--no-cache".into(),
        ]);
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    fn run(&self, args: &[&str]) -> Run {
        self.s.run(self.args(args))
    }

    fn out_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.out().join(name)).ok()
    }

    fn nanos(&self, name: &str) -> u128 {
        self.out_file(name)
            .unwrap_or_else(|| panic!("{name} was not written"))
            .trim()
            .parse()
            .unwrap()
    }
}

/// The summary table's rows: identifier -> (status, failing phase, note).
fn summary(run: &Run) -> BTreeMap<String, (String, String, String)> {
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in run.stdout.lines() {
        if line.starts_with("IDENTIFIER ") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("batch ") {
            continue;
        }
        let cols: Vec<&str> = line
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if cols.len() >= 4 {
            let note = cols.get(4).copied().unwrap_or("").to_string();
            rows.insert(
                cols[0].to_string(),
                (cols[1].to_string(), cols[3].to_string(), note),
            );
        }
    }
    rows
}

fn status_of(run: &Run, id: &str) -> String {
    summary(run)
        .get(id)
        .unwrap_or_else(|| panic!("no row for {id}\n{}", run.stdout))
        .0
        .clone()
}

/// The lines child `id` printed (its prefix removed), without the agent's `[Container]` lines.
fn printed<'a>(run: &'a Run, id: &str) -> Vec<&'a str> {
    let prefix = format!("[{id}] ");
    run.stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter(|l| !l.starts_with("[Container]") && !l.is_empty())
        .collect()
}

#[test]
fn a_list_runs_every_build_with_its_identifier_and_variables() {
    let b = Batch::new(
        "version: 0.2\nbatch:\n  build-list:\n    - identifier: linux\n      env:\n        variables:\n          FLAVOUR: penguin\n    - identifier: mac_os\n      env:\n        compute-type: BUILD_GENERAL1_LARGE\n        variables:\n          FLAVOUR: apple\nphases:\n  build:\n    commands:\n      - echo \"id=$CODEBUILD_BATCH_BUILD_IDENTIFIER flavour=$FLAVOUR src=$CODEBUILD_SRC_DIR\"\n      - echo \"arn=$CODEBUILD_BATCH_BUILD_ARN\"\n      - touch made-by-$CODEBUILD_BATCH_BUILD_IDENTIFIER\n",
    );
    let run = b.run(&["-j", "2"]);
    run.expect_code(0);
    let linux = printed(&run, "linux");
    assert!(
        linux[0].starts_with("id=linux flavour=penguin src="),
        "{}",
        run.stdout
    );
    let mac = printed(&run, "mac_os");
    assert!(
        mac[0].starts_with("id=mac_os flavour=apple src="),
        "{}",
        run.stdout
    );
    // Each build has its own copy of the source, not the original.
    let src_linux = linux[0].rsplit("src=").next().unwrap();
    let src_mac = mac[0].rsplit("src=").next().unwrap();
    assert_ne!(src_linux, src_mac);
    assert!(!b.src().join("made-by-linux").exists());
    assert!(
        !Path::new(src_linux).exists(),
        "the copy is removed after the build"
    );
    assert!(
        linux[1].starts_with("arn=arn:aws:codebuild:"),
        "{}",
        run.stdout
    );
    assert_eq!(linux[1], mac[1], "one batch ARN for all builds");
    assert_eq!(status_of(&run, "linux"), "SUCCEEDED");
    assert_eq!(status_of(&run, "mac_os"), "SUCCEEDED");
    assert!(
        run.stdout
            .contains("not applicable on this machine, ignored: compute-type=BUILD_GENERAL1_LARGE"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("batch SUCCEEDED in"), "{}", run.stdout);

    // Outside a batch the identifier is empty and the batch section is ignored.
    let single = b.s.run([
        "run",
        "--log-format",
        "codebuild",
        "-s",
        b.src().to_str().unwrap(),
        "--no-cache",
    ]);
    single.expect_code(0);
    assert!(
        single.stdout.contains("\nid= flavour= src="),
        "{}",
        single.stdout
    );
}

#[test]
fn graph_dependents_start_after_their_dependencies_end() {
    let b = Batch::fixture("graph.yml");
    let run = b.run(&["-j", "4"]);
    run.expect_code(0);
    assert!(
        b.nanos("test.start") >= b.nanos("compile.end"),
        "{}",
        run.stdout
    );
    assert!(b.nanos("package.start") >= b.nanos("compile.end"));
    assert!(b.nanos("package.start") >= b.nanos("test.end"));
    // `docs` depends on nothing: it ran beside `compile`, not after everything.
    assert!(b.nanos("docs.start") < b.nanos("package.start"));
    assert_eq!(printed(&run, "test")[0], "I am test step=test");
}

#[test]
fn a_failing_dependency_leaves_its_dependents_not_started() {
    let b = Batch::new(
        "version: 0.2\nbatch:\n  build-graph:\n    - identifier: compile\n      env:\n        variables:\n          FAIL: 'yes'\n    - identifier: test\n      depend-on: [compile]\n    - identifier: package\n      depend-on: [test]\n    - identifier: lint\nphases:\n  build:\n    commands:\n      - touch \"$OUT/ran-$CODEBUILD_BATCH_BUILD_IDENTIFIER\"\n      - test -z \"$FAIL\"\n",
    );
    let run = b.run(&["-j", "2", "--log-format", "json"]);
    run.expect_code(1);
    assert!(b.out_file("ran-compile").is_some());
    assert!(b.out_file("ran-lint").is_some());
    assert!(
        b.out_file("ran-test").is_none(),
        "a dependent of a failed build ran"
    );
    assert!(b.out_file("ran-package").is_none());
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let finished = |id: &str| {
        events
            .iter()
            .find(|e| e["type"] == "child_finished" && e["build_identifier"] == id)
            .unwrap_or_else(|| panic!("no child_finished for {id}"))
            .clone()
    };
    assert_eq!(finished("compile")["status"], "FAILED");
    assert_eq!(finished("compile")["failing_phase"], "BUILD");
    assert_eq!(finished("test")["status"], "NOT_STARTED");
    assert_eq!(finished("test")["reason"], "dependency `compile` FAILED");
    assert_eq!(finished("package")["status"], "NOT_STARTED");
    assert_eq!(
        finished("package")["reason"],
        "dependency `test` NOT_STARTED"
    );
    assert_eq!(finished("lint")["status"], "SUCCEEDED");
    // Every event of a child carries its identifier; a child's own events are single-build JSON.
    let output = events
        .iter()
        .find(|e| {
            e["type"] == "phase_finished"
                && e["build_identifier"] == "compile"
                && e["phase"] == "BUILD"
        })
        .unwrap();
    assert_eq!(output["status"], "FAILED");
    assert_eq!(output["schema"], 1);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "batch_finished");
    assert_eq!(last["status"], "FAILED");
    assert_eq!(last["children"].as_array().unwrap().len(), 4);
}

#[test]
fn an_ignored_failure_leaves_the_batch_succeeded() {
    let b = Batch::new(
        "version: 0.2\nbatch:\n  build-list:\n    - identifier: flaky\n      ignore-failure: true\n      env:\n        variables:\n          FAIL: 'yes'\n    - identifier: solid\nphases:\n  build:\n    commands:\n      - test -z \"$FAIL\"\n",
    );
    let run = b.run(&["--fast-fail"]);
    run.expect_code(0);
    let rows = summary(&run);
    assert_eq!(rows["flaky"].0, "FAILED");
    assert!(
        rows["flaky"].2.contains("failure ignored"),
        "{}",
        run.stdout
    );
    assert_eq!(
        rows["solid"].0, "SUCCEEDED",
        "an ignored failure does not fast-fail"
    );
}

#[test]
fn fast_fail_stops_a_sleeping_sibling_and_leaves_no_process() {
    let b = Batch::new(
        "version: 0.2\nbatch:\n  fast-fail: true\n  build-list:\n    - identifier: sleeper\n    - identifier: broken\n      env:\n        variables:\n          FAIL: 'yes'\n    - identifier: queued\nphases:\n  build:\n    commands:\n      - if [ -n \"$FAIL\" ]; then while [ ! -s \"$OUT/sleeper.pid\" ]; do sleep 0.05; done; exit 3; fi\n      - touch \"$OUT/ran-$CODEBUILD_BATCH_BUILD_IDENTIFIER\"\n      - sh -c 'trap \"\" TERM; echo $$ > \"$OUT/sleeper.pid\"; while :; do sleep 1; done'\n",
    );
    let started = Instant::now();
    let run = b.run(&["-j", "2", "--grace", "1s"]);
    run.expect_code(1);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(status_of(&run, "broken"), "FAILED");
    assert_eq!(status_of(&run, "sleeper"), "STOPPED");
    assert_eq!(status_of(&run, "queued"), "NOT_STARTED");
    assert!(b.out_file("ran-queued").is_none());
    assert!(
        run.stdout.contains("Fast-fail: a build failed"),
        "{}",
        run.stdout
    );
    let pid: i32 = b.out_file("sleeper.pid").unwrap().trim().parse().unwrap();
    assert!(!alive(pid), "the stopped sibling's command {pid} survived");
}

/// Starts the batch in the background and waits for `$OUT/<file>` to be written by each build.
fn spawn_and_wait(b: &Batch, args: &[&str], files: &[&str]) -> std::process::Child {
    let child =
        b.s.command(b.args(args))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for file in files {
        while b.out_file(file).is_none_or(|t| t.trim().is_empty()) {
            assert!(Instant::now() < deadline, "{file} never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    child
}

fn pids(b: &Batch, files: &[&str]) -> Vec<i32> {
    files
        .iter()
        .map(|f| b.out_file(f).unwrap().trim().parse().unwrap())
        .collect()
}

/// Two builds side by side, each leaving a `setsid` daemon: build `two` waits until `one`'s
/// daemon is gone (`one` has ended), then writes whether its own is still alive.
const DAEMONS: &str = "version: 0.2\nbatch:\n  build-list:\n    - identifier: one\n    - identifier: two\nphases:\n  build:\n    commands:\n      - setsid -f sh -c 'echo $$ > \"$OUT/$CODEBUILD_BATCH_BUILD_IDENTIFIER.daemon\"; exec sleep 600' </dev/null >/dev/null 2>&1\n      - while [ ! -s \"$OUT/one.daemon\" ] || [ ! -s \"$OUT/two.daemon\" ]; do sleep 0.05; done\n      - |\n        if [ \"$CODEBUILD_BATCH_BUILD_IDENTIFIER\" = two ]; then\n          n=0; while kill -0 $(cat \"$OUT/one.daemon\") 2>/dev/null && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done\n          kill -0 $(cat \"$OUT/one.daemon\") 2>/dev/null && echo alive > \"$OUT/one-daemon\" || echo gone > \"$OUT/one-daemon\"\n          kill -0 $(cat \"$OUT/two.daemon\") 2>/dev/null && echo alive > \"$OUT/two-daemon\" || echo gone > \"$OUT/two-daemon\"\n        fi\n";

#[test]
fn without_cgroups_each_builds_end_ends_only_its_own_daemons() {
    for cgroups in ["off", "on"] {
        let b = Batch::new(DAEMONS);
        let run = Run::from(
            b.s.command(b.args(&["-j", "2", "--grace", "2s"]))
                .env("BUILDAGENT_CGROUPS", cgroups)
                .output()
                .unwrap(),
        );
        run.expect_code(0);
        // `one`'s end ended its daemon while `two` ran, and left `two`'s alone.
        assert_eq!(
            b.out_file("one-daemon").as_deref(),
            Some("gone\n"),
            "{}",
            run.stdout
        );
        assert_eq!(
            b.out_file("two-daemon").as_deref(),
            Some("alive\n"),
            "{}",
            run.stdout
        );
        for pid in pids(&b, &["one.daemon", "two.daemon"]) {
            assert!(!alive(pid), "daemon {pid} outlived the batch");
        }
        for id in ["one", "two"] {
            assert!(
                run.stdout
                    .lines()
                    .any(|l| l.starts_with(&format!("[{id}] "))
                        && l.contains("Ended 1 process(es) the build left running")),
                "{cgroups}: {id}\n{}",
                run.stdout
            );
        }
    }
}

const SLEEPERS: &str = "version: 0.2\nbatch:\n  build-list:\n    - identifier: one\n    - identifier: two\n    - identifier: three\nphases:\n  build:\n    commands:\n      - sh -c 'echo $$ > \"$OUT/$CODEBUILD_BATCH_BUILD_IDENTIFIER.pid\"; exec sleep 600'\n";

#[test]
fn ctrl_c_stops_every_build_of_the_batch() {
    let b = Batch::new(SLEEPERS);
    let files = ["one.pid", "two.pid"];
    let child = spawn_and_wait(&b, &["-j", "2", "--grace", "2s"], &files);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    let run = Run {
        code: output.status.code(),
        stdout,
        stderr: String::new(),
    };
    assert_eq!(status_of(&run, "one"), "STOPPED");
    assert_eq!(status_of(&run, "two"), "STOPPED");
    assert_eq!(status_of(&run, "three"), "NOT_STARTED");
    assert!(run.stdout.contains("batch STOPPED in"), "{}", run.stdout);
    for pid in pids(&b, &files) {
        assert!(!alive(pid), "command {pid} survived the stop");
    }
}

#[test]
fn the_batch_timeout_ends_every_build() {
    let b = Batch::new(SLEEPERS);
    let run = b.run(&["-j", "3", "--batch-timeout", "2s", "--grace", "1s"]);
    run.expect_code(124);
    for id in ["one", "two", "three"] {
        assert_eq!(status_of(&run, id), "TIMED_OUT", "{}", run.stdout);
    }
    assert!(run.stdout.contains("Batch timed out"), "{}", run.stdout);
    for pid in pids(&b, &["one.pid", "two.pid", "three.pid"]) {
        assert!(!alive(pid), "command {pid} survived the timeout");
    }
}

#[test]
fn a_matrix_is_the_product_of_its_values_with_documented_identifiers() {
    let b = Batch::fixture("matrix.yml");
    let dir = testdata().join("batch/matrix");
    std::fs::create_dir_all(b.src().join("matrix")).unwrap();
    for f in ["one.yml", "two.yml"] {
        std::fs::copy(dir.join(f), b.src().join("matrix").join(f)).unwrap();
    }
    let run = b.run(&["-j", "3"]);
    run.expect_code(0);
    let expected = [
        (
            "matrix_1",
            "one matrix_1 plain",
            "buildspec=matrix/one.yml FLAVOUR=plain",
        ),
        (
            "matrix_2",
            "one matrix_2 salted",
            "buildspec=matrix/one.yml FLAVOUR=salted",
        ),
        (
            "matrix_3",
            "one matrix_3 sweet",
            "buildspec=matrix/one.yml FLAVOUR=sweet",
        ),
        (
            "matrix_4",
            "two matrix_4 plain",
            "buildspec=matrix/two.yml FLAVOUR=plain",
        ),
        (
            "matrix_5",
            "two matrix_5 salted",
            "buildspec=matrix/two.yml FLAVOUR=salted",
        ),
        (
            "matrix_6",
            "two matrix_6 sweet",
            "buildspec=matrix/two.yml FLAVOUR=sweet",
        ),
    ];
    let rows = summary(&run);
    assert_eq!(rows.len(), 6, "{}", run.stdout);
    for (id, line, description) in expected {
        assert_eq!(printed(&run, id), [line], "{}", run.stdout);
        assert_eq!(rows[id].0, "SUCCEEDED");
        assert_eq!(rows[id].2, description);
    }
    // A child's own `batch` section never starts another batch.
    assert!(!run.stdout.contains("never_run_from_a_child"));
}

/// A source with `count` test files and the script that records what each shard ran.
fn fanout(count: usize) -> Batch {
    let b = Batch::fixture("fanout.yml");
    for i in 0..count {
        b.s.write(&format!("src/tests/unit/t{i:02}.sh"), "");
    }
    b.s.write("src/tests/not-a-test.txt", "");
    b.s.write(
        "src/run-tests.sh",
        "for f in \"$@\"; do echo \"$f\" >> \"$OUT/$CODEBUILD_BATCH_BUILD_IDENTIFIER.files\"; done\n\
         printf '%s\\n' \"$CODEBUILD_CURRENT_SHARD_FILES\" > \"$OUT/$CODEBUILD_BATCH_BUILD_IDENTIFIER.var\"\n\
         { echo '<testsuite name=\"s\">'; for f in \"$@\"; do echo \"<testcase name=\\\"$f\\\" time=\\\"1\\\"/>\"; done; echo '</testsuite>'; } > report-$CODEBUILD_BATCH_BUILD_IDENTIFIER.xml\n",
    );
    b
}

#[test]
fn fanout_shards_run_every_test_file_exactly_once_with_both_strategies() {
    for strategy in ["equal-distribution", "stability"] {
        let b = fanout(10);
        let reports = b.s.path().join("reports");
        let run = b.run(&[
            "-j",
            "2",
            "--env-var",
            &format!("STRATEGY={strategy}"),
            "-r",
            reports.to_str().unwrap(),
        ]);
        run.expect_code(0);
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        for shard in 1..=4 {
            let id = format!("shard_{shard}");
            let files = b.out_file(&format!("{id}.files")).unwrap_or_default();
            let files: Vec<String> = files.lines().map(str::to_string).collect();
            if !files.is_empty() {
                // The same list, newline-separated, in the variable.
                assert_eq!(
                    b.out_file(&format!("{id}.var")).unwrap().trim_end(),
                    files.join("\n")
                );
            }
            sizes.push(files.len());
            all.extend(files);
        }
        all.sort();
        let expected: Vec<String> = (0..10).map(|i| format!("tests/unit/t{i:02}.sh")).collect();
        assert_eq!(
            all, expected,
            "{strategy}: every file exactly once\n{}",
            run.stdout
        );
        if strategy == "equal-distribution" {
            assert_eq!(sizes, [3, 3, 2, 2]);
        }
        // The shards' report groups merged: counts summed, the longest shard's duration.
        let merged: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(reports.join("summary.json")).unwrap())
                .unwrap();
        let group = &merged["groups"][0];
        assert_eq!(group["name"], "unit");
        assert_eq!(group["total"], 10);
        assert_eq!(group["status"], "SUCCEEDED");
        assert_eq!(group["duration"], *sizes.iter().max().unwrap() as f64);
        assert!(reports.join("shard_1/summary.json").is_file());
        assert!(
            run.stdout.contains("Report group unit merged from"),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn a_shard_without_files_runs_nothing_and_says_so() {
    let b = fanout(2);
    let run = b.run(&["-j", "4", "--env-var", "STRATEGY=equal-distribution"]);
    run.expect_code(0);
    assert!(b.out_file("shard_3.files").is_none());
    assert!(
        run.stdout.contains(
            "[shard_3] codebuild-tests-run: no test files for shard 3 of 4 (2 file(s) in all); nothing to run"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn artifacts_are_written_per_build_or_combined() {
    let spec = "version: 0.2\nbatch:\n  build-list:\n    - identifier: alpha\n    - identifier: beta\nphases:\n  build:\n    commands:\n      - echo \"$CODEBUILD_BATCH_BUILD_IDENTIFIER\" > out.txt\n      - echo extra > extra.txt\nartifacts:\n  files: [out.txt]\n  secondary-artifacts:\n    docs:\n      files: [extra.txt]\n";
    let b = Batch::new(spec);
    let dir = b.s.path().join("artifacts");
    let run = b.run(&["-a", dir.to_str().unwrap()]);
    run.expect_code(0);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["alpha.zip", "alpha_docs.zip", "beta.zip", "beta_docs.zip"]
    );
    assert_eq!(
        zip_entries(&dir.join("alpha.zip")),
        [("out.txt".to_string(), "alpha\n".to_string())]
    );
    assert!(
        run.stdout.contains(&format!(
            "written to {}",
            dir.join("beta_docs.zip").display()
        )),
        "{}",
        run.stdout
    );

    let combined = b.s.path().join("combined");
    let run = b.run(&["-a", combined.to_str().unwrap(), "--combine-artifacts"]);
    run.expect_code(0);
    let mut names: Vec<String> = std::fs::read_dir(&combined)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["alpha_docs.zip", "artifacts.zip", "beta_docs.zip"]);
    assert_eq!(
        zip_entries(&combined.join("artifacts.zip")),
        [
            ("alpha/out.txt".to_string(), "alpha\n".to_string()),
            ("beta/out.txt".to_string(), "beta\n".to_string())
        ]
    );
}

fn zip_entries(path: &Path) -> Vec<(String, String)> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        out.push((f.name().unwrap().to_string(), text));
    }
    out
}

#[test]
fn each_build_has_its_own_log_file() {
    let b = Batch::new(
        "version: 0.2\nbatch:\n  build-list:\n    - identifier: a\n    - identifier: b\nphases:\n  build:\n    commands:\n      - echo \"hello from $CODEBUILD_BATCH_BUILD_IDENTIFIER\"\n",
    );
    let logs = b.s.path().join("logs");
    let run = b.run(&["--log-dir", logs.to_str().unwrap()]);
    run.expect_code(0);
    for id in ["a", "b"] {
        let log = std::fs::read_to_string(logs.join(format!("{id}.log"))).unwrap();
        assert!(log.contains(&format!("\nhello from {id}\n")), "{log}");
        assert!(log.contains("[Container] "), "{log}");
        assert!(
            !log.contains(&format!("[{id}] ")),
            "the file is the plain log: {log}"
        );
        let other = if id == "a" { "b" } else { "a" };
        assert!(!log.contains(&format!("hello from {other}")));
    }
}

#[test]
fn invalid_batches_are_rejected_before_anything_runs() {
    let cases = [
        (
            "cycle.yml",
            vec![],
            "the build graph has a cycle: compile -> package -> test -> compile",
            ":6:19",
        ),
        (
            "unknown-dependency.yml",
            vec![],
            "`test` depends on `compil`, which is not a build of this graph",
            ":6:19",
        ),
        (
            "bad-identifier.yml",
            vec![],
            "invalid batch build identifier `linux-arm64`",
            ":5:19",
        ),
        (
            "too-many.yml",
            vec![],
            "the matrix makes 11 x 10 = 110 builds, more than the 100 allowed",
            ":7:15",
        ),
        (
            "graph.yml",
            vec!["--max-builds", "3"],
            "the batch has 4 builds, more than the 3 allowed",
            ":16:19",
        ),
    ];
    for (file, extra, message, position) in cases {
        let b = Batch::fixture(file);
        let run = b.run(&extra);
        run.expect_code(2);
        assert!(run.stderr.contains(message), "{file}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("buildspec.yml{position}")),
            "{file}: {}",
            run.stderr
        );
        assert_eq!(
            std::fs::read_dir(b.out()).unwrap().count(),
            0,
            "{file}: a build ran"
        );
        assert!(!run.stdout.contains("[Batch]"), "{file}: {}", run.stdout);
    }
    // --batch on a buildspec without a batch section.
    let b = Batch::new("version: 0.2\nphases:\n  build:\n    commands: [touch \"$OUT/ran\"]\n");
    let run = b.run(&[]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("has no `batch` section: --batch needs one"),
        "{}",
        run.stderr
    );
    assert!(b.out_file("ran").is_none());
    // A child's buildspec that does not parse stops the batch before it starts.
    let b = Batch::new("version: 0.2\nbatch:\n  build-list:\n    - identifier: a\n    - identifier: b\n      buildspec: broken.yml\nphases:\n  build:\n    commands: [touch \"$OUT/ran\"]\n");
    b.s.write(
        "src/broken.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo Step 1: build\n",
    );
    let run = b.run(&[]);
    run.expect_code(2);
    assert!(run.stderr.contains("broken.yml:5:9"), "{}", run.stderr);
    assert!(b.out_file("ran").is_none());
}

/// What a batch does not take yet is refused up front (exit status 2), with nothing run: a
/// fetched source (it would be fetched once per build into one place) and the single-build log
/// sinks.
#[test]
fn fetched_sources_and_log_sinks_are_refused_by_a_batch() {
    let b = Batch::fixture("graph.yml");
    let cases: [(&[&str], &str); 3] = [
        (
            &["-s", "lib:file:///nowhere/lib.git"],
            "--batch builds from local source directories",
        ),
        (
            &["--cloudwatch-logs", "/aws/codebuild/demo"],
            "--cloudwatch-logs and --s3-logs are for a single build",
        ),
        (
            &["--s3-logs", "s3://bucket/logs"],
            "--cloudwatch-logs and --s3-logs are for a single build",
        ),
    ];
    for (args, message) in cases {
        let run = b.run(args);
        run.expect_code(2);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        assert_eq!(
            std::fs::read_dir(b.out()).unwrap().count(),
            0,
            "{args:?}: a build ran"
        );
    }
}

/// The containers the agent made (labelled `buildagent.build`), running or not: full ids.
fn agent_containers() -> Vec<String> {
    let out = std::process::Command::new(buildagent_tests::services::tool("docker"))
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            "label=buildagent.build",
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// One container test at a time in this binary: each checks that no container of its own is
/// left, by comparing the agent's containers before and after.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A command that prints `container=<id>`: the id of the container it runs in, read from the
/// engine's bind mounts (`/var/lib/docker/containers/<id>/hostname`...), with busybox's tools.
const PRINT_CONTAINER: &str =
    "echo \"container=$(grep -o 'containers/[0-9a-f]*' /proc/self/mountinfo | head -1 | cut -d/ -f2)\"";

/// Child `id`'s container, as it printed it with [`PRINT_CONTAINER`].
fn container_of(run: &Run, id: &str) -> String {
    let line = printed(run, id)
        .into_iter()
        .find_map(|l| l.strip_prefix("container="))
        .unwrap_or_else(|| panic!("{id} printed no container id\n{}", run.stdout))
        .to_string();
    assert_eq!(line.len(), 64, "{id}: not a container id: {line:?}");
    line
}

/// Each build ran in a container of its own, and none of the batch's containers is left: not
/// the ones the builds printed, nor any other the agent made since `before`.
fn assert_own_containers_removed(run: &Run, ids: &[&str], before: &[String]) {
    let containers: std::collections::BTreeSet<String> =
        ids.iter().map(|id| container_of(run, id)).collect();
    assert_eq!(
        containers.len(),
        ids.len(),
        "one container per build: {containers:?}"
    );
    let now = agent_containers();
    let left: Vec<&String> = now
        .iter()
        .filter(|c| containers.contains(*c) || !before.contains(c))
        .collect();
    assert!(left.is_empty(), "containers left: {left:?}");
}

/// The base image with this machine's shared libraries for the agent's executable, so that the
/// helpers mounted from it (`codebuild-hash-files`, `codebuild-tests-run`,
/// `codebuild-glob-search`) run in it, and a file that tells it from the base image.
fn image_with_libraries() -> TestImage {
    let mut files: Vec<(String, Content)> = with_libraries(&buildagent_tests::binary())
        .into_iter()
        .skip(1)
        .collect();
    files.push((
        "/etc/buildagent-test-image".into(),
        Content::Text("with-libraries\n".into()),
    ));
    TestImage::build("batch-libraries", &files, "")
}

/// Prints which image the command runs in: `with-libraries` or `base`.
const PRINT_IMAGE: &str =
    "echo \"made=$(cat /etc/buildagent-test-image 2>/dev/null || echo base)\"";

#[test]
fn builds_run_in_containers_each_with_its_image_and_none_is_left() {
    let _serial = serial();
    buildagent_tests::services::docker();
    let image = buildagent_tests::services::base_image();
    let before = agent_containers();
    let b = Batch::new(&format!(
        "version: 0.2\nbatch:\n  build-graph:\n    - identifier: compile\n      env:\n        image: {image}\n        privileged-mode: false\n    - identifier: test\n      depend-on: [compile]\n      env:\n        variables:\n          V: tested\n    - identifier: lint\n      ignore-failure: true\n      env:\n        variables:\n          FAIL: 'yes'\n    - identifier: after_lint\n      depend-on: [lint]\nphases:\n  build:\n    commands:\n      - echo \"id=$CODEBUILD_BATCH_BUILD_IDENTIFIER v=$V image=$CODEBUILD_BUILD_IMAGE\"\n      - test -z \"$FAIL\"\n"
    ));
    let run = b.run(&["-i", &image, "-j", "2"]);
    // `after_lint` did not start: it counts, so the batch failed although `lint` is ignored.
    run.expect_code(1);
    assert_eq!(
        printed(&run, "compile"),
        [format!("id=compile v= image={image}").as_str()],
        "{}",
        run.stdout
    );
    assert_eq!(
        printed(&run, "test")[0],
        format!("id=test v=tested image={image}")
    );
    assert_eq!(status_of(&run, "compile"), "SUCCEEDED");
    assert_eq!(status_of(&run, "test"), "SUCCEEDED");
    assert_eq!(status_of(&run, "lint"), "FAILED");
    assert_eq!(status_of(&run, "after_lint"), "NOT_STARTED");
    let left: Vec<String> = agent_containers()
        .into_iter()
        .filter(|c| !before.contains(c))
        .collect();
    assert!(left.is_empty(), "containers left: {left:?}");
}

#[test]
fn a_list_runs_in_containers_with_each_build_its_image_and_variables() {
    let _serial = serial();
    let base = buildagent_tests::services::base_image();
    let libraries = image_with_libraries();
    let before = agent_containers();
    let b = Batch::new(&format!(
        "version: 0.2\nbatch:\n  build-list:\n    - identifier: plain\n      env:\n        variables:\n          V: one\n    - identifier: marked\n      env:\n        image: {}\n        variables:\n          V: two\nphases:\n  build:\n    commands:\n      - echo \"id=$CODEBUILD_BATCH_BUILD_IDENTIFIER v=$V image=$CODEBUILD_BUILD_IMAGE\"\n      - {PRINT_IMAGE}\n      - {PRINT_CONTAINER}\n      - touch made-by-$CODEBUILD_BATCH_BUILD_IDENTIFIER && ls made-by-*\n",
        libraries.tag()
    ));
    let run = b.run(&["-i", &base, "-j", "2"]);
    run.expect_code(0);
    let plain = printed(&run, "plain");
    assert_eq!(
        plain[..2],
        [format!("id=plain v=one image={base}").as_str(), "made=base"][..],
        "{}",
        run.stdout
    );
    // Its own copy of the source: the other build's file is not in it.
    assert_eq!(plain.last(), Some(&"made-by-plain"), "{}", run.stdout);
    let marked = printed(&run, "marked");
    assert_eq!(
        marked[..2],
        [
            format!("id=marked v=two image={}", libraries.tag()).as_str(),
            "made=with-libraries"
        ][..],
        "{}",
        run.stdout
    );
    assert_eq!(marked.last(), Some(&"made-by-marked"));
    assert_eq!(status_of(&run, "plain"), "SUCCEEDED");
    assert_eq!(status_of(&run, "marked"), "SUCCEEDED");
    assert!(!b.src().join("made-by-plain").exists());
    assert_own_containers_removed(&run, &["plain", "marked"], &before);
}

#[test]
fn fast_fail_in_containers_stops_the_sibling_and_removes_every_container() {
    let _serial = serial();
    let base = buildagent_tests::services::base_image();
    let before = agent_containers();
    let b = Batch::new(&format!(
        "version: 0.2\nbatch:\n  fast-fail: true\n  build-list:\n    - identifier: sleeper\n    - identifier: broken\n      env:\n        variables:\n          FAIL: 'yes'\n    - identifier: queued\nphases:\n  build:\n    commands:\n      - {PRINT_CONTAINER}\n      - if [ -n \"$FAIL\" ]; then sleep 2; exit 3; fi\n      - sleep 600\n"
    ));
    let started = Instant::now();
    let run = b.run(&["-i", &base, "-j", "2", "--grace", "1s"]);
    run.expect_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{}",
        run.stdout
    );
    assert_eq!(status_of(&run, "broken"), "FAILED", "{}", run.stdout);
    assert_eq!(status_of(&run, "sleeper"), "STOPPED", "{}", run.stdout);
    assert_eq!(status_of(&run, "queued"), "NOT_STARTED");
    assert!(
        run.stdout.contains("Fast-fail: a build failed"),
        "{}",
        run.stdout
    );
    assert_own_containers_removed(&run, &["sleeper", "broken"], &before);
}

#[test]
fn a_matrix_runs_in_containers_with_each_combination_its_image_and_variable() {
    let _serial = serial();
    let base = buildagent_tests::services::base_image();
    let libraries = image_with_libraries();
    let before = agent_containers();
    let b = Batch::new(&format!(
        "version: 0.2\nbatch:\n  build-matrix:\n    dynamic:\n      env:\n        image:\n          - {base}\n          - {}\n        variables:\n          FLAVOUR: [plain, salted]\nphases:\n  build:\n    commands:\n      - echo \"$CODEBUILD_BATCH_BUILD_IDENTIFIER $FLAVOUR $CODEBUILD_BUILD_IMAGE\"\n      - {PRINT_IMAGE}\n      - {PRINT_CONTAINER}\n",
        libraries.tag()
    ));
    let run = b.run(&["-j", "2"]);
    // Without -i the builds run on this machine: the images are not used.
    run.expect_code(0);
    assert_eq!(printed(&run, "matrix_4")[1], "made=base", "{}", run.stdout);

    let run = b.run(&["-i", &base, "-j", "2"]);
    run.expect_code(0);
    let rows = summary(&run);
    assert_eq!(rows.len(), 4, "{}", run.stdout);
    let expected = [
        ("matrix_1", "plain", base.as_str(), "base"),
        ("matrix_2", "salted", base.as_str(), "base"),
        ("matrix_3", "plain", libraries.tag(), "with-libraries"),
        ("matrix_4", "salted", libraries.tag(), "with-libraries"),
    ];
    for (id, flavour, image, made) in expected {
        assert_eq!(
            printed(&run, id)[..2],
            [
                format!("{id} {flavour} {image}").as_str(),
                format!("made={made}").as_str()
            ][..],
            "{}",
            run.stdout
        );
        assert_eq!(rows[id].0, "SUCCEEDED");
        assert_eq!(rows[id].2, format!("image={image} FLAVOUR={flavour}"));
    }
    assert_own_containers_removed(
        &run,
        &["matrix_1", "matrix_2", "matrix_3", "matrix_4"],
        &before,
    );
}

#[test]
fn fanout_shards_in_containers_run_every_test_file_exactly_once() {
    let _serial = serial();
    let libraries = image_with_libraries();
    let before = agent_containers();
    for strategy in ["equal-distribution", "stability"] {
        let b = Batch::new(&format!(
            "version: 0.2\nbatch:\n  build-fanout:\n    parallelism: 3\nphases:\n  build:\n    commands:\n      - codebuild-tests-run --test-command 'sh run-tests.sh' --files-search \"codebuild-glob-search 'tests/**/*.sh'\" --sharding-strategy \"$STRATEGY\"\n      - echo \"key=$(codebuild-hash-files run-tests.sh)\"\n      - {PRINT_CONTAINER}\n"
        ));
        for i in 0..7 {
            b.s.write(&format!("src/tests/unit/t{i}.sh"), "");
        }
        b.s.write("src/tests/not-a-test.txt", "");
        b.s.write(
            "src/run-tests.sh",
            format!(
                "{PRINT_IMAGE}\nfor f in \"$@\"; do echo \"ran $f\"; done\nprintf 'var %s\\n' $CODEBUILD_CURRENT_SHARD_FILES\n"
            ),
        );
        let run = b.run(&[
            "-i",
            libraries.tag(),
            "-j",
            "3",
            "--env-var",
            &format!("STRATEGY={strategy}"),
        ]);
        run.expect_code(0);
        assert!(
            !run.stdout.contains("is not available"),
            "{strategy}: the helpers run in the image\n{}",
            run.stdout
        );
        let mut all = Vec::new();
        for shard in 1..=3 {
            let id = format!("shard_{shard}");
            let lines = printed(&run, &id);
            let ran: Vec<&str> = lines
                .iter()
                .filter_map(|l| l.strip_prefix("ran "))
                .collect();
            let var: Vec<&str> = lines
                .iter()
                .filter_map(|l| l.strip_prefix("var "))
                .collect();
            assert_eq!(
                ran, var,
                "{strategy} {id}: the variable holds the same files"
            );
            if !ran.is_empty() {
                assert!(lines.contains(&"made=with-libraries"), "{}", run.stdout);
            }
            // codebuild-hash-files ran in the container too.
            let key = lines
                .iter()
                .find_map(|l| l.strip_prefix("key="))
                .unwrap_or_else(|| panic!("{id}: no key\n{}", run.stdout));
            assert_eq!(key.len(), 64, "{}", run.stdout);
            all.extend(ran.into_iter().map(str::to_string));
        }
        all.sort();
        let expected: Vec<String> = (0..7).map(|i| format!("tests/unit/t{i}.sh")).collect();
        assert_eq!(
            all, expected,
            "{strategy}: every file exactly once\n{}",
            run.stdout
        );
        assert_own_containers_removed(&run, &["shard_1", "shard_2", "shard_3"], &before);
    }
    // In the base image (busybox, no C library) the agent's executable cannot run: the shards
    // fail, and each says why rather than only `codebuild-tests-run: not found`.
    let b = Batch::new(&format!(
        "version: 0.2\nbatch:\n  build-fanout:\n    parallelism: 2\nphases:\n  build:\n    commands:\n      - {PRINT_CONTAINER}\n      - codebuild-tests-run --test-command 'echo' --files-search \"codebuild-glob-search '*.yml'\"\n"
    ));
    let run = b.run(&["-i", &buildagent_tests::services::base_image(), "-j", "2"]);
    run.expect_code(1);
    for id in ["shard_1", "shard_2"] {
        assert_eq!(status_of(&run, id), "FAILED");
        assert!(
            run.stdout.lines().any(|l| {
                l.starts_with(&format!("[{id}] [Container] "))
                    && l.contains(
                        "Warning: codebuild-hash-files is not available: the agent's executable",
                    )
                    && l.contains(
                        "(nor are codebuild-tests-run and codebuild-glob-search, the same executable)",
                    )
            }),
            "{}",
            run.stdout
        );
    }
    assert_own_containers_removed(&run, &["shard_1", "shard_2"], &before);
}

/// The agent's containers made since `before`, once `count` of them run `sleep 600`.
fn wait_for_sleeping_containers(before: &[String], count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sleeping: Vec<String> = agent_containers()
            .into_iter()
            .filter(|c| !before.contains(c))
            .filter(|c| {
                buildagent_tests::images::docker(["top", c.as_str()])
                    .stdout
                    .contains("sleep 600")
            })
            .collect();
        if sleeping.len() >= count {
            return sleeping;
        }
        assert!(Instant::now() < deadline, "the builds never slept");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ctrl_c_and_the_batch_timeout_end_every_build_in_containers() {
    let _serial = serial();
    let base = buildagent_tests::services::base_image();
    let before = agent_containers();
    let spec = "version: 0.2\nbatch:\n  build-list:\n    - identifier: one\n    - identifier: two\n    - identifier: three\nphases:\n  build:\n    commands:\n      - sleep 600\n";
    let b = Batch::new(spec);
    let child =
        b.s.command(b.args(&["-i", &base, "-j", "2", "--grace", "2s"]))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let sleeping = wait_for_sleeping_containers(&before, 2);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect_code(130);
    assert_eq!(status_of(&run, "one"), "STOPPED");
    assert_eq!(status_of(&run, "two"), "STOPPED");
    assert_eq!(status_of(&run, "three"), "NOT_STARTED");
    let left: Vec<String> = agent_containers()
        .into_iter()
        .filter(|c| sleeping.contains(c) || !before.contains(c))
        .collect();
    assert!(left.is_empty(), "containers left after Ctrl-C: {left:?}");

    let run = b.run(&[
        "-i",
        &base,
        "-j",
        "3",
        "--batch-timeout",
        "4s",
        "--grace",
        "1s",
    ]);
    run.expect_code(124);
    for id in ["one", "two", "three"] {
        assert_eq!(status_of(&run, id), "TIMED_OUT", "{}", run.stdout);
    }
    let left: Vec<String> = agent_containers()
        .into_iter()
        .filter(|c| !before.contains(c))
        .collect();
    assert!(
        left.is_empty(),
        "containers left after the timeout: {left:?}"
    );
}
