//! `buildagent run` with the buildspec's `cache` on a local store (`--cache-dir`): decisions.md
//! "Artifacts, caches, reports" — keyed entries written once, fallback keys, `action`, versions,
//! corrupt entries, and no save when POST_BUILD did not run.

use std::path::PathBuf;

use buildagent_tests::{Run, Sandbox};

fn src(s: &Sandbox) -> PathBuf {
    s.path().join("src")
}

fn store(s: &Sandbox) -> PathBuf {
    s.path().join("cache")
}

/// Runs `spec` in `src/` (in place) with `--cache-dir cache` and `args`.
fn build(s: &Sandbox, spec: &str, args: &[&str]) -> Run {
    s.write("src/buildspec.yml", spec);
    let mut all = vec![
        "run".to_string(),
        "-m".into(),
        "-s".into(),
        src(s).display().to_string(),
        "--cache-dir".into(),
        store(s).display().to_string(),
        "--log-format".into(),
        "codebuild".into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    s.run(all)
}

/// Every entry file in the store, relative to it.
fn entries(s: &Sandbox) -> Vec<String> {
    let root = store(s);
    if !root.exists() {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for item in std::fs::read_dir(dir).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(path.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

/// A spec whose BUILD reports whether `deps/file` was restored, then (re)creates it with `$V`.
fn spec(cache: &str) -> String {
    format!(
        "version: 0.2\n\
         phases:\n  build:\n    commands:\n\
         \x20     - 'if [ -f deps/file ]; then echo \"RESTORED $(cat deps/file)\"; else echo NOTHING; fi'\n\
         \x20     - mkdir -p deps && echo \"$V\" > deps/file\n\
         cache:\n{cache}"
    )
}

fn clear_deps(s: &Sandbox) {
    let _ = std::fs::remove_dir_all(src(s).join("deps"));
}

fn one_entry(s: &Sandbox) -> PathBuf {
    let found = entries(s);
    assert_eq!(found.len(), 1, "{found:?}");
    store(s).join(&found[0])
}

#[test]
fn a_keyed_entry_is_restored_and_never_rewritten() {
    let s = Sandbox::new();
    s.write("src/lock", "v1");
    let spec = spec("  key: deps-$(cat lock)\n  paths:\n    - deps/**/*\n");
    let first = build(&s, &spec, &["--env-var", "V=one"]);
    first.expect_code(0);
    assert!(first.stdout.contains("NOTHING"), "{}", first.stdout);
    assert!(
        first.stdout.contains("Expanded cache path deps/**/*"),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("Cache miss (tried: deps-v1)"),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("Cache deps-v1 saved to"),
        "{}",
        first.stdout
    );
    let entry = one_entry(&s);
    assert!(
        entry.ends_with("keys/deps-v1.tar.zst"),
        "{}",
        entry.display()
    );
    let saved = std::fs::read(&entry).unwrap();

    clear_deps(&s);
    let second = build(&s, &spec, &["--env-var", "V=two"]);
    second.expect_code(0);
    assert!(second.stdout.contains("RESTORED one"), "{}", second.stdout);
    assert!(
        second.stdout.contains("Cache deps-v1 restored from"),
        "{}",
        second.stdout
    );
    assert!(
        second.stdout.contains("already exists"),
        "{}",
        second.stdout
    );
    assert_eq!(std::fs::read(&entry).unwrap(), saved);
}

#[test]
fn fallback_keys_match_a_prefix_newest_first() {
    let s = Sandbox::new();
    let spec = spec("  key: npm-$V\n  fallback-keys:\n    - npm-\n  paths:\n    - deps/**/*\n");
    for v in ["a", "b"] {
        clear_deps(&s);
        build(&s, &spec, &["--env-var", &format!("V={v}")]).expect_code(0);
        // Distinct modification times, whatever the file system's resolution.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    clear_deps(&s);
    let run = build(&s, &spec, &["--env-var", "V=c"]);
    run.expect_code(0);
    assert!(run.stdout.contains("RESTORED b"), "{}", run.stdout);
    assert!(
        run.stdout.contains("Cache npm-b restored from"),
        "{}",
        run.stdout
    );
    assert_eq!(entries(&s).len(), 3, "{:?}", entries(&s));
}

#[test]
fn action_restore_never_saves_and_save_never_restores() {
    let s = Sandbox::new();
    let restore = spec("  action: restore\n  paths:\n    - deps/**/*\n");
    let run = build(&s, &restore, &["--env-var", "V=one"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("action: restore never saves"),
        "{}",
        run.stdout
    );
    assert!(entries(&s).is_empty(), "{:?}", entries(&s));

    let save = spec("  action: save\n  paths:\n    - deps/**/*\n");
    build(&s, &save, &["--env-var", "V=one"]).expect_code(0);
    let entry = one_entry(&s);
    assert!(entry.ends_with("default.tar.zst"), "{}", entry.display());
    clear_deps(&s);
    let run = build(&s, &save, &["--env-var", "V=two"]);
    run.expect_code(0);
    assert!(run.stdout.contains("NOTHING"), "{}", run.stdout);
    assert!(
        run.stdout.contains("action: save never restores"),
        "{}",
        run.stdout
    );

    // Without action, the unkeyed entry is restored and refreshed: it now holds "two".
    let both = spec("  paths:\n    - deps/**/*\n");
    clear_deps(&s);
    let run = build(&s, &both, &["--env-var", "V=three"]);
    assert!(run.stdout.contains("RESTORED two"), "{}", run.stdout);
    clear_deps(&s);
    let run = build(&s, &both, &["--env-var", "V=four"]);
    assert!(run.stdout.contains("RESTORED three"), "{}", run.stdout);
}

#[test]
fn the_same_key_with_other_paths_is_another_entry() {
    let s = Sandbox::new();
    let first = spec("  key: k\n  paths:\n    - deps/**/*\n");
    build(&s, &first, &["--env-var", "V=one"]).expect_code(0);
    clear_deps(&s);
    let other = spec("  key: k\n  paths:\n    - deps/**/*\n    - other/**/*\n");
    let run = build(&s, &other, &["--env-var", "V=two"]);
    run.expect_code(0);
    assert!(run.stdout.contains("NOTHING"), "{}", run.stdout);
    assert!(run.stdout.contains("Cache miss"), "{}", run.stdout);
    assert_eq!(entries(&s).len(), 2, "{:?}", entries(&s));
}

#[test]
fn a_truncated_entry_is_a_warning_and_a_miss() {
    let s = Sandbox::new();
    let spec = spec("  key: k\n  paths:\n    - deps/**/*\n");
    build(&s, &spec, &["--env-var", "V=one"]).expect_code(0);
    let entry = one_entry(&s);
    let data = std::fs::read(&entry).unwrap();
    std::fs::write(&entry, &data[..data.len() / 2]).unwrap();
    clear_deps(&s);
    let run = build(&s, &spec, &["--env-var", "V=two"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("cannot restore the cache entry"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Cache miss (tried: k)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("NOTHING"), "{}", run.stdout);
}

#[test]
fn a_bad_key_is_named_and_nothing_is_saved() {
    let s = Sandbox::new();
    let spec = spec("  key: a/$V\n  paths:\n    - deps/**/*\n");
    let run = build(&s, &spec, &["--env-var", "V=one"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("invalid cache key \"a/$V\""),
        "{}",
        run.stdout
    );
    assert!(entries(&s).is_empty(), "{:?}", entries(&s));
}

fn no_save(s: &Sandbox, spec: &str, args: &[&str]) -> Run {
    let run = build(s, spec, args);
    assert!(entries(s).is_empty(), "{:?}\n{}", entries(s), run.stdout);
    assert!(!run.stdout.contains("Archiving cache"), "{}", run.stdout);
    run
}

#[test]
fn no_save_after_an_install_failure_or_a_timeout() {
    let cache = "cache:\n  paths:\n    - deps/**/*\n";
    let s = Sandbox::new();
    s.write("src/deps/file", "x");
    let install = format!(
        "version: 0.2\nphases:\n  install:\n    commands:\n      - exit 3\n  post_build:\n    commands:\n      - echo post\n{cache}"
    );
    let run = no_save(&s, &install, &[]);
    assert_ne!(run.code, Some(0));
    let timeout =
        format!("version: 0.2\nphases:\n  post_build:\n    commands:\n      - sleep 30\n{cache}");
    let run = no_save(&s, &timeout, &["--timeout", "1s", "--grace", "1s"]);
    assert_ne!(run.code, Some(0));
}

#[test]
fn no_cache_disables_the_store() {
    let s = Sandbox::new();
    s.write("src/buildspec.yml", spec("  paths:\n    - deps/**/*\n"));
    let run = s.run([
        "run",
        "-m",
        "-s",
        src(&s).to_str().unwrap(),
        "--no-cache",
        "--log-format",
        "codebuild",
    ]);
    run.expect_code(0);
    assert!(run.stdout.contains("--no-cache"), "{}", run.stdout);
}

#[test]
fn secrets_in_keys_are_masked() {
    let s = Sandbox::new();
    let spec = spec("  key: k-$TOKEN\n  paths:\n    - deps/**/*\n");
    for _ in 0..2 {
        clear_deps(&s);
        s.write("src/buildspec.yml", &spec);
        let run = s.run([
            "run",
            "-m",
            "-s",
            src(&s).to_str().unwrap(),
            "--cache-dir",
            store(&s).to_str().unwrap(),
            "--secret",
            "TOKEN=s3cr3t",
            "--env-var",
            "V=one",
            "--log-format",
            "json",
        ]);
        run.expect_code(0);
        assert!(run.stdout.contains("\"type\":\"cache_"), "{}", run.stdout);
        assert!(!run.stdout.contains("s3cr3t"), "{}", run.stdout);
    }
}
