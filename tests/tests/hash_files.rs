//! `codebuild-hash-files GLOB...` on a build's `PATH`: the agent's own executable under that
//! name. Every expected hash is computed here independently, with `sha256sum` in a shell:
//! SHA-256 over the concatenated binary SHA-256 digests of the files, in sorted path order.

use std::path::{Path, PathBuf};
use std::process::Command;

use buildagent_tests::{Run, Sandbox};

fn src(s: &Sandbox) -> PathBuf {
    s.path().join("src")
}

/// Runs `spec` in `src/` (in place), CodeBuild log format, with `args`.
fn build(s: &Sandbox, spec: &str, args: &[&str]) -> Run {
    s.write("src/buildspec.yml", spec);
    let mut all = vec![
        "run".to_string(),
        "-m".into(),
        "-s".into(),
        src(s).display().to_string(),
        "--log-format".into(),
        "codebuild".into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    s.run(all)
}

/// A buildspec whose BUILD phase runs `commands`.
fn spec(commands: &[&str]) -> String {
    let mut yaml = "version: 0.2\nphases:\n  build:\n    commands:\n".to_string();
    for c in commands {
        yaml.push_str(&format!("      - {}\n", yaml_quote(c)));
    }
    yaml
}

fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The expected hash of `files` (relative to `dir`, in the order given), computed by the shell:
/// each file's `sha256sum` turned back into 32 bytes, all of them through `sha256sum` again.
fn expected(dir: &Path, files: &[&str]) -> String {
    let script = r#"for f in "$@"; do printf "$(sha256sum "$f" | cut -c1-64 | sed 's/../\\x&/g')"; done | sha256sum | cut -c1-64"#;
    let out = Command::new("bash")
        .current_dir(dir)
        .arg("-c")
        .arg(script)
        .arg("expected")
        .args(files)
        .output()
        .expect("run bash");
    assert!(out.status.success(), "{out:?}");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(hash.len(), 64, "{hash}");
    hash
}

/// The line of the log right after the line that is exactly `marker` (what a command printed
/// after `echo marker`).
fn line_after<'a>(log: &'a str, marker: &str) -> &'a str {
    let mut lines = log.lines();
    lines
        .by_ref()
        .find(|l| *l == marker)
        .unwrap_or_else(|| panic!("no line {marker} in\n{log}"));
    lines.next().unwrap_or("")
}

#[test]
fn one_file_is_hashed_as_the_sha256_of_its_digest() {
    let s = Sandbox::new();
    s.write("src/package-lock.json", "{\"lockfileVersion\": 3}\n");
    let run = build(
        &s,
        &spec(&[
            "echo HASH && codebuild-hash-files package-lock.json",
            "echo STATUS $?",
        ]),
        &[],
    );
    run.expect_code(0);
    let want = expected(&src(&s), &["package-lock.json"]);
    assert_eq!(line_after(&run.stdout, "HASH"), want, "{}", run.stdout);
    // Not the plain digest of the file.
    let plain = Command::new("sha256sum")
        .arg(src(&s).join("package-lock.json"))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).starts_with(&want));
}

#[test]
fn several_globs_are_one_hash_over_the_sorted_files() {
    let s = Sandbox::new();
    s.write("src/a/2.txt", "two\n");
    s.write("src/a/1.txt", "one\n");
    s.write("src/a/skip.md", "not a txt\n");
    s.write("src/b.lock", "lock\n");
    let run = build(
        &s,
        &spec(&[
            "echo FORWARD && codebuild-hash-files 'a/*.txt' b.lock",
            // The same files in another pattern order, and named twice: the same hash.
            "echo BACKWARD && codebuild-hash-files b.lock a/2.txt './a/*.txt'",
        ]),
        &[],
    );
    run.expect_code(0);
    let want = expected(&src(&s), &["a/1.txt", "a/2.txt", "b.lock"]);
    assert_eq!(line_after(&run.stdout, "FORWARD"), want, "{}", run.stdout);
    assert_eq!(line_after(&run.stdout, "BACKWARD"), want, "{}", run.stdout);
}

#[test]
fn double_star_spans_directories_and_dot_directories() {
    let s = Sandbox::new();
    s.write("src/package.json", "root\n");
    s.write("src/packages/web/package.json", "web\n");
    s.write("src/packages/api/deep/package.json", "api\n");
    s.write("src/.config/package.json", "hidden\n");
    s.write("src/packages/web/other.json", "other\n");
    let run = build(
        &s,
        &spec(&[
            "echo ALL && codebuild-hash-files '**/package.json'",
            "echo UNDER && codebuild-hash-files 'packages/**/*.json'",
            "echo ONE_LEVEL && codebuild-hash-files '*/package.json'",
        ]),
        &[],
    );
    run.expect_code(0);
    // Sorted byte by byte, as `LC_ALL=C sort` sorts them.
    let all = expected(
        &src(&s),
        &[
            ".config/package.json",
            "package.json",
            "packages/api/deep/package.json",
            "packages/web/package.json",
        ],
    );
    assert_eq!(line_after(&run.stdout, "ALL"), all, "{}", run.stdout);
    let under = expected(
        &src(&s),
        &[
            "packages/api/deep/package.json",
            "packages/web/other.json",
            "packages/web/package.json",
        ],
    );
    assert_eq!(line_after(&run.stdout, "UNDER"), under, "{}", run.stdout);
    let one = expected(&src(&s), &[".config/package.json"]);
    assert_eq!(line_after(&run.stdout, "ONE_LEVEL"), one, "{}", run.stdout);
}

#[test]
fn patterns_are_relative_to_the_current_directory() {
    let s = Sandbox::new();
    s.write("src/sub/lock", "sub lock\n");
    s.write("src/lock", "top lock\n");
    let run = build(
        &s,
        &spec(&["cd sub", "echo HERE && codebuild-hash-files lock"]),
        &[],
    );
    run.expect_code(0);
    let want = expected(&src(&s).join("sub"), &["lock"]);
    assert_eq!(line_after(&run.stdout, "HERE"), want, "{}", run.stdout);
}

#[test]
fn no_match_is_an_empty_line_and_a_warning_and_an_unreadable_file_fails() {
    let s = Sandbox::new();
    std::fs::create_dir_all(src(&s)).unwrap();
    std::os::unix::fs::symlink("missing-target", src(&s).join("dangling")).unwrap();
    let run = build(
        &s,
        &spec(&[
            "h=$(codebuild-hash-files nothing.json 'none/**/*'); echo \"EMPTY [$h] $?\"",
            "codebuild-hash-files dangling || echo \"FAILED $?\"",
            "codebuild-hash-files || echo \"USAGE $?\"",
        ]),
        &[],
    );
    run.expect_code(0);
    assert!(run.stdout.contains("EMPTY [] 0"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("codebuild-hash-files: warning: no file matches nothing.json"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("codebuild-hash-files: warning: no file matches none/**/*"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("FAILED 1"), "{}", run.stdout);
    assert!(run.stdout.contains("cannot read"), "{}", run.stdout);
    assert!(run.stdout.contains("USAGE 2"), "{}", run.stdout);
}

#[test]
fn the_helper_survives_a_buildspec_path_and_its_directory_is_removed_after_the_build() {
    let s = Sandbox::new();
    s.write("src/lock", "x\n");
    let yaml = "version: 0.2\n\
                env:\n  variables:\n    PATH: /usr/bin:/bin\n\
                phases:\n  build:\n    commands:\n\
                \x20     - command -v codebuild-hash-files > helper-path\n\
                \x20     - export PATH=\"$PATH:/opt/nothing\"\n\
                \x20     - echo HASH && codebuild-hash-files lock\n";
    let run = build(&s, yaml, &[]);
    run.expect_code(0);
    assert_eq!(
        line_after(&run.stdout, "HASH"),
        expected(&src(&s), &["lock"]),
        "{}",
        run.stdout
    );
    let helper = std::fs::read_to_string(src(&s).join("helper-path")).unwrap();
    let helper = Path::new(helper.trim());
    assert!(
        helper.ends_with("codebuild-hash-files"),
        "{}",
        helper.display()
    );
    assert!(
        !helper.parent().unwrap().exists(),
        "{} is left after the build",
        helper.display()
    );
}

#[test]
fn a_cache_key_made_with_the_helper_names_the_entry() {
    let s = Sandbox::new();
    s.write("src/package-lock.json", "{\"v\": 1}\n");
    let store = s.path().join("cache");
    let spec = "version: 0.2\n\
                phases:\n  build:\n    commands:\n\
                \x20     - 'if [ -f deps/file ]; then echo \"RESTORED $(cat deps/file)\"; else echo NOTHING; fi'\n\
                \x20     - mkdir -p deps && echo \"$V\" > deps/file\n\
                cache:\n  key: npm-$(codebuild-hash-files package-lock.json)\n  paths:\n    - deps/**/*\n";
    let store_arg = store.display().to_string();
    let run_with = |v: &str| build(&s, spec, &["--cache-dir", &store_arg, "--env-var", v]);

    let key = format!("npm-{}", expected(&src(&s), &["package-lock.json"]));
    let first = run_with("V=one");
    first.expect_code(0);
    assert!(first.stdout.contains("NOTHING"), "{}", first.stdout);
    assert!(
        first.stdout.contains(&format!("Cache {key} saved to")),
        "{}",
        first.stdout
    );
    let entries = entries(&store);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        entries[0].ends_with(&format!("keys/{key}.tar.zst")),
        "{entries:?}"
    );

    // The same lock file: the entry is found by its key.
    std::fs::remove_dir_all(src(&s).join("deps")).unwrap();
    let second = run_with("V=two");
    second.expect_code(0);
    assert!(second.stdout.contains("RESTORED one"), "{}", second.stdout);
    assert!(
        second
            .stdout
            .contains(&format!("Cache {key} restored from")),
        "{}",
        second.stdout
    );

    // A changed lock file is another key: a miss, and a second entry.
    s.write("src/package-lock.json", "{\"v\": 2}\n");
    std::fs::remove_dir_all(src(&s).join("deps")).unwrap();
    let third = run_with("V=three");
    third.expect_code(0);
    assert!(third.stdout.contains("NOTHING"), "{}", third.stdout);
    let new_key = format!("npm-{}", expected(&src(&s), &["package-lock.json"]));
    assert_ne!(new_key, key);
    assert!(
        third.stdout.contains(&format!("Cache {new_key} saved to")),
        "{}",
        third.stdout
    );
    assert_eq!(self::entries(&store).len(), 2);
}

/// Every entry file in the store, relative to it, sorted.
fn entries(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(items) = std::fs::read_dir(dir) else {
            continue;
        };
        for item in items {
            let path = item.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}
