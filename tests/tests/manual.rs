//! `buildagent completions SHELL` and `buildagent man`, through the real binary.

use buildagent_tests::Sandbox;

#[test]
fn completions_are_printed_for_each_shell_and_know_the_commands_and_flags() {
    let sandbox = Sandbox::new();
    let bash = sandbox.run(["completions", "bash"]);
    bash.expect_code(0);
    assert!(
        bash.stdout.contains("complete -F _buildagent"),
        "{}",
        bash.stdout
    );
    assert!(bash.stdout.contains("--artifacts-namespace"));
    let zsh = sandbox.run(["completions", "zsh"]);
    zsh.expect_code(0);
    assert!(
        zsh.stdout.starts_with("#compdef buildagent"),
        "{}",
        zsh.stdout
    );
    for shell in ["fish", "elvish", "powershell"] {
        let run = sandbox.run(["completions", shell]);
        run.expect_code(0);
        assert!(run.stdout.contains("validate"), "{shell}: {}", run.stdout);
    }
    let bad = sandbox.run(["completions", "tcsh"]);
    bad.expect_code(2);
    assert!(
        bad.stderr.contains("invalid value 'tcsh'"),
        "{}",
        bad.stderr
    );
}

#[test]
fn the_manual_page_is_printed_or_written_one_page_per_command() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(["man"]);
    run.expect_code(0);
    assert!(
        run.stdout.starts_with(".ie \\n(.g .ds Aq"),
        "{}",
        &run.stdout[..200]
    );
    assert!(run.stdout.contains(".TH buildagent 1"), "{}", run.stdout);
    assert!(run.stdout.contains("buildagent\\-run(1)"), "{}", run.stdout);

    let dir = sandbox.path().join("man1");
    sandbox
        .run(["man", "--out-dir", dir.to_str().unwrap()])
        .expect_code(0);
    let run_page = std::fs::read_to_string(dir.join("buildagent-run.1")).unwrap();
    assert!(run_page.contains("\\-\\-log\\-file"), "{run_page}");
    for page in [
        "buildagent.1",
        "buildagent-validate.1",
        "buildagent-image.1",
    ] {
        assert!(dir.join(page).is_file(), "{page} missing");
    }
}
