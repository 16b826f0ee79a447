//! `buildagent run -a DIR`: every worked example of buildspec-reference.md §5.4 (A1–A10, A14) on
//! its source tree, and the rules of decisions.md "Artifacts, caches, reports" (collisions,
//! symbolic links, secondary artifacts, packaging, determinism, which failures still upload).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use buildagent_tests::{Run, Sandbox};

/// The source tree of §5.4, under `src/` in the sandbox.
const TREE: [&str; 8] = [
    "README.md",
    ".env",
    "dist/app.js",
    "dist/css/site.css",
    "my-build-1/my-file-1.txt",
    "my-build-2/my-file-2.txt",
    "my-build-2/my-subdirectory/my-file-3.txt",
    "target/app-1.0.jar",
];

fn sandbox() -> Sandbox {
    let s = Sandbox::new();
    for f in TREE {
        s.write(&format!("src/{f}"), format!("contents of {f}\n"));
    }
    s
}

fn src(s: &Sandbox) -> PathBuf {
    s.path().join("src")
}

fn out(s: &Sandbox) -> PathBuf {
    s.path().join("out")
}

/// Runs `spec` in `src/` (in place) with `-a out` and `args`.
fn build(s: &Sandbox, spec: &str, args: &[&str]) -> Run {
    s.write("src/buildspec.yml", spec);
    let src = src(s);
    let out = out(s);
    let mut all = vec![
        "run".to_string(),
        "-m".into(),
        "-s".into(),
        src.display().to_string(),
        "-a".into(),
        out.display().to_string(),
    ];
    if !args.contains(&"--log-format") {
        all.extend(["--log-format".into(), "codebuild".into()]);
    }
    all.extend(args.iter().map(|a| a.to_string()));
    s.run(all)
}

/// A build whose only job is to produce artifacts with `artifacts` (YAML under `artifacts:`).
fn artifacts_build(s: &Sandbox, artifacts: &str) -> Run {
    build(
        s,
        &format!(
            "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nartifacts:\n{artifacts}"
        ),
        &[],
    )
}

/// The entry names of a zip, in archive order.
fn zip_names(path: &Path) -> Vec<String> {
    let mut archive = zip::ZipArchive::new(File::open(path).expect("the zip exists")).unwrap();
    (0..archive.len())
        .map(|i| archive.by_index(i).unwrap().name().unwrap().into_owned())
        .collect()
}

fn zip_entry(path: &Path, name: &str) -> (Vec<u8>, Option<u32>, bool) {
    let mut archive = zip::ZipArchive::new(File::open(path).unwrap()).unwrap();
    let mut entry = archive.by_name(name).unwrap();
    let mut data = Vec::new();
    entry.read_to_end(&mut data).unwrap();
    (data, entry.unix_mode(), entry.is_symlink())
}

fn primary(s: &Sandbox) -> Vec<String> {
    zip_names(&out(s).join("artifacts.zip"))
}

fn phase_lines(run: &Run) -> Vec<&str> {
    run.stdout
        .lines()
        .filter_map(|l| l.split_once("Phase complete: ").map(|(_, rest)| rest))
        .collect()
}

fn unzip_available() -> bool {
    Command::new("unzip").arg("-v").output().is_ok()
}

#[test]
fn a1_every_file_with_its_path_including_dot_files() {
    let s = sandbox();
    let run = artifacts_build(&s, "  files: ['**/*']\n");
    run.expect_code(0);
    let mut expected: Vec<String> = TREE.iter().map(|f| f.to_string()).collect();
    expected.push("buildspec.yml".into());
    expected.sort();
    assert_eq!(primary(&s), expected);
    assert!(run.stdout.contains("Found 9 file(s)"), "{}", run.stdout);
    let (data, _, _) = zip_entry(&out(&s).join("artifacts.zip"), ".env");
    assert_eq!(data, b"contents of .env\n");
}

#[test]
fn a2_a_directory_at_any_depth() {
    let s = sandbox();
    artifacts_build(&s, "  files: ['dist/**/*']\n").expect_code(0);
    assert_eq!(primary(&s), ["dist/app.js", "dist/css/site.css"]);
}

#[test]
fn a3_base_directory_is_stripped_from_the_paths() {
    let s = sandbox();
    artifacts_build(&s, "  files: ['**/*']\n  base-directory: dist\n").expect_code(0);
    assert_eq!(primary(&s), ["app.js", "css/site.css"]);
}

#[test]
fn a4_discard_paths_keeps_only_the_names() {
    let s = sandbox();
    artifacts_build(&s, "  files: ['dist/**/*']\n  discard-paths: yes\n").expect_code(0);
    assert_eq!(primary(&s), ["app.js", "site.css"]);
}

#[test]
fn a5_a_star_stays_inside_one_segment() {
    let s = sandbox();
    artifacts_build(
        &s,
        "  files: ['*/my-file-3.txt']\n  base-directory: my-build-2\n",
    )
    .expect_code(0);
    assert_eq!(primary(&s), ["my-subdirectory/my-file-3.txt"]);
}

#[test]
fn a6_a_base_directory_glob_with_discard_paths() {
    let s = sandbox();
    artifacts_build(
        &s,
        "  files: ['**/*']\n  base-directory: 'my-build*'\n  discard-paths: yes\n",
    )
    .expect_code(0);
    assert_eq!(
        primary(&s),
        ["my-file-1.txt", "my-file-2.txt", "my-file-3.txt"]
    );
}

#[test]
fn a7_base_directories_merge_at_the_root() {
    let s = sandbox();
    let run = artifacts_build(&s, "  files: ['**/*']\n  base-directory: 'my-build*'\n");
    run.expect_code(0);
    assert_eq!(
        primary(&s),
        [
            "my-file-1.txt",
            "my-file-2.txt",
            "my-subdirectory/my-file-3.txt"
        ]
    );
    assert!(run
        .stdout
        .contains("Expanding base directory path: my-build*"));
    assert!(run
        .stdout
        .contains("Expanding file paths for base directory my-build-1"));
    assert!(run
        .stdout
        .contains("Expanding file paths for base directory my-build-2"));
}

#[test]
fn a8_exclude_paths_are_relative_to_the_base() {
    let s = sandbox();
    artifacts_build(
        &s,
        "  files: ['**/*']\n  exclude-paths: ['**/.*', 'dist/css/**/*']\n",
    )
    .expect_code(0);
    let names = primary(&s);
    assert!(!names.contains(&".env".to_string()), "{names:?}");
    assert!(
        !names.contains(&"dist/css/site.css".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"dist/app.js".to_string()), "{names:?}");
    assert_eq!(names.len(), 7, "{names:?}");
}

#[test]
fn a9_a_pattern_that_matches_nothing_is_skipped() {
    let s = sandbox();
    let run = artifacts_build(&s, "  files: [target/app-1.0.jar, nothere.txt]\n");
    run.expect_code(0);
    assert_eq!(primary(&s), ["target/app-1.0.jar"]);
    assert!(
        run.stdout
            .contains("Skipping invalid file path nothere.txt"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Found 1 file(s)"));
    assert!(phase_lines(&run).contains(&"UPLOAD_ARTIFACTS State: SUCCEEDED"));
}

#[test]
fn a10_no_file_at_all_fails_upload_artifacts() {
    let s = sandbox();
    let run = artifacts_build(&s, "  files: [nothere.txt]\n");
    run.expect_code(1);
    assert!(phase_lines(&run).contains(&"UPLOAD_ARTIFACTS State: FAILED"));
    assert!(
        run.stdout.contains(
            "Phase context status code: CLIENT_ERROR Message: no matching artifact paths found"
        ),
        "{}",
        run.stdout
    );
    assert!(!out(&s).join("artifacts.zip").exists());
}

#[test]
fn a14_a_secondary_artifact_from_a_secondary_source() {
    let s = sandbox();
    s.write("other/file1", "from source1\n");
    s.write("other/file2", "not asked for\n");
    let other = s.path().join("other").display().to_string();
    s.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nartifacts:\n  files: ['**/*']\n  secondary-artifacts:\n    artifact1:\n      base-directory: $CODEBUILD_SRC_DIR_source1\n      files: [file1]\n",
    );
    let run = s.run([
        "run",
        "-m",
        "-s",
        &src(&s).display().to_string(),
        "-s",
        &format!("source1:{other}"),
        "-a",
        &out(&s).display().to_string(),
        "--log-format",
        "codebuild",
    ]);
    run.expect_code(0);
    assert_eq!(zip_names(&out(&s).join("artifact1.zip")), ["file1"]);
    assert_eq!(primary(&s).len(), 9);
    assert!(run
        .stdout
        .contains("Preparing to copy secondary artifacts artifact1"));
    assert!(run
        .stdout
        .contains("Secondary artifact artifact1 written to"));
}

#[test]
fn secondary_artifacts_are_written_beside_the_primary_one() {
    let s = sandbox();
    let run = artifacts_build(
        &s,
        "  files: [README.md]\n  secondary-artifacts:\n    web:\n      base-directory: dist\n      files: ['**/*']\n    jars:\n      files: ['**/*.jar']\n      discard-paths: yes\n",
    );
    run.expect_code(0);
    assert_eq!(primary(&s), ["README.md"]);
    assert_eq!(
        zip_names(&out(&s).join("web.zip")),
        ["app.js", "css/site.css"]
    );
    assert_eq!(zip_names(&out(&s).join("jars.zip")), ["app-1.0.jar"]);
}

#[test]
fn secondary_artifacts_without_primary_files_fail() {
    let s = sandbox();
    let run = artifacts_build(
        &s,
        "  secondary-artifacts:\n    web:\n      files: ['dist/**/*']\n",
    );
    run.expect_code(1);
    assert!(
        run.stdout.contains(
            "Phase context status code: CLIENT_ERROR Message: no definition for primary artifacts in buildspec"
        ),
        "{}",
        run.stdout
    );
    assert!(!out(&s).join("web.zip").exists());
}

#[test]
fn a_secondary_artifact_matching_nothing_fails_and_nothing_is_written() {
    let s = sandbox();
    let run = artifacts_build(
        &s,
        "  files: [README.md]\n  secondary-artifacts:\n    web:\n      files: ['nothing/**/*']\n",
    );
    run.expect_code(1);
    assert!(run
        .stdout
        .contains("CLIENT_ERROR Message: no matching artifact paths found"));
    assert!(!out(&s).join("artifacts.zip").exists());
    assert!(!out(&s).join("web.zip").exists());
}

#[test]
fn a_discard_paths_collision_fails_and_names_both_files() {
    let s = sandbox();
    s.write("src/a/x.txt", "a\n");
    s.write("src/b/x.txt", "b\n");
    let run = artifacts_build(&s, "  files: ['a/*', 'b/*']\n  discard-paths: yes\n");
    run.expect_code(1);
    assert!(phase_lines(&run).contains(&"UPLOAD_ARTIFACTS State: FAILED"));
    assert!(
        run.stdout.contains(
            "CLIENT_ERROR Message: `a/x.txt` and `b/x.txt` would both be stored as `x.txt` in the artifact (discard-paths: yes)"
        ),
        "{}",
        run.stdout
    );
    assert!(!out(&s).join("artifacts.zip").exists());
}

#[test]
fn a_link_to_a_file_inside_the_tree_is_stored_as_that_file() {
    let s = sandbox();
    std::os::unix::fs::symlink("../README.md", src(&s).join("dist/readme-link")).unwrap();
    artifacts_build(&s, "  files: ['dist/*']\n").expect_code(0);
    assert_eq!(primary(&s), ["dist/app.js", "dist/readme-link"]);
    let (data, _, is_link) = zip_entry(&out(&s).join("artifacts.zip"), "dist/readme-link");
    assert!(!is_link);
    assert_eq!(data, b"contents of README.md\n");
}

#[test]
fn a_link_leaving_the_tree_is_skipped_with_a_warning() {
    let s = sandbox();
    s.write("outside.txt", "secret\n");
    std::os::unix::fs::symlink(s.path().join("outside.txt"), src(&s).join("dist/out-link"))
        .unwrap();
    std::os::unix::fs::symlink("nowhere", src(&s).join("dist/dangling")).unwrap();
    let run = artifacts_build(&s, "  files: ['dist/*']\n");
    run.expect_code(0);
    assert_eq!(primary(&s), ["dist/app.js"]);
    assert!(
        run.stdout.contains(
            "Warning: Skipping symbolic link dist/out-link: it points outside the source tree"
        ),
        "{}",
        run.stdout
    );
    assert!(run
        .stdout
        .contains("Warning: Skipping symbolic link dist/dangling: its target does not exist"));
}

#[test]
fn enable_symlinks_stores_links_as_links() {
    let s = sandbox();
    std::os::unix::fs::symlink("app.js", src(&s).join("dist/inside")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src(&s).join("dist/outside")).unwrap();
    artifacts_build(&s, "  files: ['dist/*']\n  enable-symlinks: yes\n").expect_code(0);
    assert_eq!(primary(&s), ["dist/app.js", "dist/inside", "dist/outside"]);
    let zip = out(&s).join("artifacts.zip");
    let (target, mode, is_link) = zip_entry(&zip, "dist/inside");
    assert!(is_link);
    assert_eq!(target, b"app.js");
    assert_eq!(mode.map(|m| m & 0o170000), Some(0o120000));
    let (target, _, is_link) = zip_entry(&zip, "dist/outside");
    assert!(is_link);
    assert_eq!(target, b"/etc/hostname");
}

#[test]
fn unix_modes_and_the_fixed_timestamp_are_kept() {
    let s = sandbox();
    let script = s.write("src/bin/run.sh", "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    artifacts_build(&s, "  files: ['bin/*', README.md]\n").expect_code(0);
    let zip = out(&s).join("artifacts.zip");
    assert_eq!(zip_entry(&zip, "bin/run.sh").1, Some(0o100755));
    assert_eq!(zip_entry(&zip, "README.md").1, Some(0o100644));
    if unzip_available() {
        let listing = Command::new("unzip").arg("-Z").arg(&zip).output().unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(
            listing.contains("-rwxr-xr-x") && listing.contains("80-Jan-01 00:00 bin/run.sh"),
            "{listing}"
        );
        let test = Command::new("unzip").arg("-tq").arg(&zip).output().unwrap();
        assert!(
            test.status.success(),
            "{}",
            String::from_utf8_lossy(&test.stdout)
        );
    }
}

#[test]
fn packaging_none_writes_directories() {
    let s = sandbox();
    let script = s.write("src/dist/run.sh", "#!/bin/sh\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.write("src/buildspec.yml", "");
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nartifacts:\n  files: ['dist/**/*']\n  secondary-artifacts:\n    jars:\n      files: [target/app-1.0.jar]\n",
        &["--artifacts-packaging", "none"],
    );
    run.expect_code(0);
    let dir = out(&s).join("artifacts");
    assert_eq!(
        std::fs::read_to_string(dir.join("dist/css/site.css")).unwrap(),
        "contents of dist/css/site.css\n"
    );
    let mode = std::fs::metadata(dir.join("dist/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert!(out(&s).join("jars/target/app-1.0.jar").is_file());
    assert!(!out(&s).join("artifacts.zip").exists());
    // A second build replaces the directory: a file gone from the tree is gone from the artifact.
    std::fs::remove_file(src(&s).join("dist/app.js")).unwrap();
    build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nartifacts:\n  files: ['dist/**/*']\n",
        &["--artifacts-packaging", "none"],
    )
    .expect_code(0);
    assert!(!dir.join("dist/app.js").exists());
    assert!(dir.join("dist/css/site.css").exists());
    let leftovers: Vec<_> = std::fs::read_dir(out(&s))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn two_builds_of_the_same_tree_give_byte_identical_zips() {
    let s = sandbox();
    // Enough files to spread over the worker threads.
    for i in 0..200 {
        s.write(
            &format!("src/gen/{i:03}.txt"),
            format!("line {i}\n").repeat(i + 1),
        );
    }
    artifacts_build(&s, "  files: ['**/*']\n").expect_code(0);
    let first = std::fs::read(out(&s).join("artifacts.zip")).unwrap();
    // New modification times, same contents.
    for f in TREE {
        let path = src(&s).join(f);
        let data = std::fs::read(&path).unwrap();
        std::fs::write(&path, data).unwrap();
    }
    artifacts_build(&s, "  files: ['**/*']\n").expect_code(0);
    let second = std::fs::read(out(&s).join("artifacts.zip")).unwrap();
    assert!(first == second, "the two zips differ");
}

#[test]
fn a_build_failure_still_produces_artifacts() {
    let s = sandbox();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: ['mkdir -p dist && echo new > dist/new.txt', 'false']\nartifacts:\n  files: ['dist/*']\n",
        &[],
    );
    run.expect_code(1);
    assert!(phase_lines(&run).contains(&"BUILD State: FAILED"));
    assert!(phase_lines(&run).contains(&"UPLOAD_ARTIFACTS State: SUCCEEDED"));
    assert_eq!(primary(&s), ["dist/app.js", "dist/new.txt"]);
}

#[test]
fn an_install_failure_produces_no_artifacts() {
    let s = sandbox();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  install:\n    commands: ['false']\nartifacts:\n  files: ['**/*']\n",
        &[],
    );
    run.expect_code(1);
    assert!(!run.stdout.contains("UPLOAD_ARTIFACTS"), "{}", run.stdout);
    assert!(!out(&s).exists() || std::fs::read_dir(out(&s)).unwrap().next().is_none());
}

#[test]
fn without_a_directory_artifacts_are_checked_but_not_written() {
    let s = sandbox();
    s.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nartifacts:\n  files: [nothere.txt]\n",
    );
    let run = s.run([
        "run",
        "-m",
        "-s",
        &src(&s).display().to_string(),
        "--log-format",
        "codebuild",
    ]);
    run.expect_code(1);
    assert!(run
        .stdout
        .contains("CLIENT_ERROR Message: no matching artifact paths found"));
}

#[test]
fn json_events_report_each_artifact() {
    let s = sandbox();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nartifacts:\n  files: ['dist/**/*']\n",
        &["--log-format", "json"],
    );
    run.expect_code(0);
    let event: serde_json::Value = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["type"] == "artifact_uploaded")
        .expect("an artifact_uploaded event");
    assert_eq!(event["identifier"], serde_json::Value::Null);
    assert_eq!(event["files"], 2);
    let path = out(&s).join("artifacts.zip");
    assert_eq!(event["path"], path.display().to_string());
    assert_eq!(event["bytes"], std::fs::metadata(&path).unwrap().len());
}

#[test]
fn an_artifacts_directory_inside_the_source_is_never_packed() {
    let s = sandbox();
    s.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nartifacts:\n  files: ['**/*']\n",
    );
    let inside = src(&s).join("out");
    for _ in 0..2 {
        s.run([
            "run",
            "-m",
            "-s",
            &src(&s).display().to_string(),
            "-a",
            &inside.display().to_string(),
            "--log-format",
            "codebuild",
        ])
        .expect_code(0);
    }
    let names = zip_names(&inside.join("artifacts.zip"));
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with("out/")), "{names:?}");
}

#[test]
fn artifacts_packaging_needs_a_directory() {
    let s = sandbox();
    s.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\n",
    );
    let run = s.run([
        "run",
        "-m",
        "-s",
        &src(&s).display().to_string(),
        "--artifacts-packaging",
        "none",
    ]);
    run.expect_code(2);
    assert!(run.stderr.contains("--artifacts"), "{}", run.stderr);
}

#[test]
fn keep_mtime_stores_each_files_own_time() {
    let s = sandbox();
    // 2021-06-15 10:20:30 UTC.
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_623_752_430);
    File::options()
        .write(true)
        .open(src(&s).join("README.md"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nartifacts:\n  files: [README.md, dist/app.js]\n",
        &["--artifacts-keep-mtime"],
    )
    .expect_code(0);
    let mut archive =
        zip::ZipArchive::new(File::open(out(&s).join("artifacts.zip")).unwrap()).unwrap();
    let t = archive
        .by_name("README.md")
        .unwrap()
        .last_modified()
        .unwrap();
    assert_eq!(
        (
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        (2021, 6, 15, 10, 20, 30)
    );
    let t = archive
        .by_name("dist/app.js")
        .unwrap()
        .last_modified()
        .unwrap();
    assert!(t.year() >= 2024, "{t:?}");
}

#[test]
fn a_build_stopped_while_zipping_leaves_no_artifact() {
    use std::io::BufRead;
    let s = sandbox();
    // 16 GiB of zeros that take no disk: many seconds to compress even with optimised
    // dependencies, so the stop lands inside.
    File::create(src(&s).join("big.bin"))
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    s.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nartifacts:\n  files: [big.bin]\n",
    );
    let mut child = s
        .command([
            "run",
            "-m",
            "-s",
            &src(&s).display().to_string(),
            "-a",
            &out(&s).display().to_string(),
            "--log-format",
            "codebuild",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.ends_with("Found 1 file(s)") {
            break;
        }
    }
    assert!(log.contains("Found 1 file(s)"), "{log}");
    let stopped = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(stopped.elapsed() < Duration::from_secs(5), "{log}");
    assert!(
        log.contains("Phase complete: UPLOAD_ARTIFACTS State: STOPPED"),
        "{log}"
    );
    let left: Vec<_> = std::fs::read_dir(out(&s))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_build_timing_out_while_zipping_leaves_no_artifact() {
    let s = sandbox();
    // As above: compressing this takes far longer than the 2 s the build gets.
    File::create(src(&s).join("big.bin"))
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    let run = build(
        &s,
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nartifacts:\n  files: [big.bin]\n",
        &["--timeout", "2s"],
    );
    run.expect_code(124);
    assert!(
        phase_lines(&run).contains(&"UPLOAD_ARTIFACTS State: TIMED_OUT"),
        "{}",
        run.stdout
    );
    let left: Vec<_> = std::fs::read_dir(out(&s))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
