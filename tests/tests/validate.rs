//! `buildagent validate`, `schema`, `--version` and usage errors, through the real binary.

use buildagent_tests::{testdata, Sandbox};

#[test]
fn a_valid_buildspec_exits_0() {
    let sandbox = Sandbox::new();
    let file = testdata().join("buildspecs/valid/typical.yml");
    let run = sandbox.run(["validate".as_ref(), file.as_os_str()]);
    run.expect_code(0);
    assert!(
        run.stdout.ends_with("typical.yml: valid\n"),
        "{}",
        run.stdout
    );
    assert_eq!(run.stderr, "");
}

#[test]
fn an_invalid_buildspec_exits_2_with_a_snippet_and_a_hint() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo Step 1: build\n",
    );
    let run = sandbox.run(["validate", "--color", "never", "buildspec.yml"]);
    run.expect_code(2);
    assert_eq!(
        run.stderr,
        "error: expected a command string, found a mapping\n \
         --> buildspec.yml:5:9\n  \
         |\n\
         5 |       - echo Step 1: build\n  \
         |         ^^^^^^^^^^^^^^^^^^ YAML reads this command as a mapping\n  \
         |\n  \
         = at: phases.build.commands[0]\n  \
         = help: quote the whole value: a `: ` (colon and space) inside an unquoted string makes YAML read it as a key, e.g. 'echo Step 1: build'\n\n"
    );
    assert_eq!(run.stdout, "buildspec.yml: invalid (1 error, 0 warnings)\n");
}

#[test]
fn warnings_do_not_fail_but_strict_makes_unknown_keys_errors() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "b.yml",
        "version: 0.2\ntimeout: 5\nphases:\n  build:\n    commands: [make]\n",
    );
    let run = sandbox.run(["validate", "b.yml"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "b.yml: valid (1 warning)\n");
    assert!(
        run.stderr
            .starts_with("warning: unknown key `timeout` at the top level\n"),
        "{}",
        run.stderr
    );
    let run = sandbox.run(["validate", "--strict", "b.yml"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .starts_with("error: unknown key `timeout` at the top level\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn json_output_is_one_object_per_file() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "good.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [make]\n    extra: 1\n",
    );
    sandbox.write(
        "bad.yml",
        "version: 9\nphases:\n  build:\n    commands: [make]\n",
    );
    let run = sandbox.run([
        "validate",
        "--format",
        "json",
        "good.yml",
        "bad.yml",
        "missing.yml",
    ]);
    run.expect_code(2);
    let objects: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(objects.len(), 3);
    assert_eq!(objects[0]["path"], "good.yml");
    assert_eq!(objects[0]["valid"], true);
    assert_eq!(objects[0]["errors"], serde_json::json!([]));
    let warning = &objects[0]["warnings"][0];
    assert_eq!(warning["path"], "phases.build.extra");
    assert_eq!(
        (warning["line"].as_u64(), warning["column"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(warning["message"], "unknown key `extra` in `phases.build`");
    assert_eq!(objects[1]["valid"], false);
    let error = &objects[1]["errors"][0];
    assert_eq!(error["path"], "version");
    assert_eq!(
        (error["line"].as_u64(), error["column"].as_u64()),
        (Some(1), Some(10))
    );
    assert_eq!(
        error["message"],
        "invalid buildspec version `9`: expected 0.1 or 0.2"
    );
    assert_eq!(objects[2]["valid"], false);
    assert!(objects[2]["errors"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("cannot read the buildspec"));
    assert_eq!(run.stderr, "");
}

#[test]
fn every_testdata_fixture_gets_the_verdict_of_its_folder() {
    let sandbox = Sandbox::new();
    for (folder, code) in [("valid", 0), ("invalid", 2)] {
        let dir = testdata().join("buildspecs").join(folder);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yml"))
            .collect();
        files.sort();
        for file in files {
            let run = sandbox.run([
                "validate".as_ref(),
                "--color".as_ref(),
                "never".as_ref(),
                file.as_os_str(),
            ]);
            run.expect_code(code);
            // The rendered diagnostics are exactly those of the fixture's `.expected` file
            // (shown with the full path instead of the bare file name).
            let expected =
                std::fs::read_to_string(file.with_extension("expected")).unwrap_or_default();
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            let shown = file.display().to_string();
            assert_eq!(
                run.stderr.replace(&shown, &name),
                expected,
                "{}",
                file.display()
            );
        }
    }
}

#[test]
fn schema_is_json_for_editors() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(["schema"]);
    run.expect_code(0);
    let schema: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(schema["properties"]["phases"]["properties"]["build"].is_object());
}

#[test]
fn version_help_and_usage_errors() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(["--version"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        format!("buildagent {}\n", env!("CARGO_PKG_VERSION"))
    );
    let run = sandbox.run(["--help"]);
    run.expect_code(0);
    assert!(run.stdout.contains("validate"), "{}", run.stdout);
    let run = sandbox.run(["validate", "--no-such-flag", "x.yml"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("unexpected argument '--no-such-flag'"),
        "{}",
        run.stderr
    );
    sandbox.run(["validate"]).expect_code(2);
    sandbox.run(Vec::<&str>::new()).expect_code(2);
}
