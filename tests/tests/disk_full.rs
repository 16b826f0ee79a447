//! A full disk (a 2 MiB tmpfs mounted for the test) while copying the source, zipping artifacts,
//! saving a cache, writing `--log-file` and writing an image layer into the content store: a clear error that names the path, the documented
//! exit status, nothing partial at the final path and nothing of the build's own left behind.
//! Mounting needs root, as on the test machines; without it the tests fail loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

use buildagent_tests::{Run, Sandbox};

/// A small tmpfs mounted at a directory of a sandbox, unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn new(sandbox: &Sandbox, name: &str) -> SmallDisk {
        let dir = sandbox.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a 2 MiB tmpfs at {} (these tests need root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    /// Every path under the mount, relative to it.
    fn files(&self) -> Vec<String> {
        walk(&self.dir)
            .into_iter()
            .map(|p| p.strip_prefix(&self.dir).unwrap().display().to_string())
            .collect()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            all.extend(walk(&path));
        }
        all.push(path);
    }
    all
}

/// `bytes` bytes that do not compress.
fn random(bytes: usize) -> Vec<u8> {
    let mut data = vec![0u8; bytes];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    data
}

fn run(sandbox: &Sandbox, args: &[&str], tmpdir: Option<&Path>) -> Run {
    let mut command = sandbox.command(args);
    if let Some(dir) = tmpdir {
        command.env("TMPDIR", dir);
    }
    let run = Run::from(command.output().unwrap());
    let tail = |s: &str| {
        let start = s.len().saturating_sub(4000);
        let start = (start..=s.len()).find(|&i| s.is_char_boundary(i)).unwrap();
        s[start..].to_string()
    };
    eprintln!(
        "--- stdout (end)\n{}\n--- stderr\n{}",
        tail(&run.stdout),
        tail(&run.stderr)
    );
    run
}

#[test]
fn copying_the_source_onto_a_full_disk_is_a_fault_naming_the_file() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\n",
    );
    sandbox.write("src/big.bin", random(3 << 20));
    let disk = SmallDisk::new(&sandbox, "disk");
    let run = run(
        &sandbox,
        &["run", "--log-format", "codebuild", "-s", "src"],
        Some(&disk.dir),
    );
    run.expect_code(3);
    assert!(run.stdout.contains("big.bin"), "{}", run.stdout);
    assert!(
        run.stdout.contains("No space left on device"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("built\n"));
    assert_eq!(disk.files(), Vec::<String>::new());
}

#[test]
fn zipping_artifacts_onto_a_full_disk_fails_the_upload_and_leaves_no_zip() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\nartifacts:\n  files: [big.bin]\n",
    );
    sandbox.write("src/big.bin", random(3 << 20));
    let disk = SmallDisk::new(&sandbox, "disk");
    let out = disk.dir.join("out");
    let run = run(
        &sandbox,
        &[
            "run",
            "--log-format",
            "codebuild",
            "-m",
            "-s",
            "src",
            "-a",
            out.to_str().unwrap(),
        ],
        None,
    );
    run.expect_code(1);
    assert!(run.stdout.contains(out.to_str().unwrap()), "{}", run.stdout);
    assert!(
        run.stdout.contains("No space left on device"),
        "{}",
        run.stdout
    );
    assert!(run
        .stdout
        .contains("Phase complete: UPLOAD_ARTIFACTS State: FAILED"));
    // The directory the agent created may stay; no file, whole or partial, is in it.
    assert_eq!(disk.files(), ["out"]);
}

#[test]
fn saving_a_cache_onto_a_full_disk_warns_and_leaves_no_entry() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands: [echo built]\ncache:\n  paths: ['deps/**/*']\n",
    );
    sandbox.write("src/deps/big.bin", random(3 << 20));
    let disk = SmallDisk::new(&sandbox, "disk");
    let cache = disk.dir.join("cache");
    let run = run(
        &sandbox,
        &[
            "run",
            "--log-format",
            "codebuild",
            "-m",
            "-s",
            "src",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        None,
    );
    run.expect_code(0);
    assert!(
        run.stdout.contains(cache.to_str().unwrap()),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("No space left on device"),
        "{}",
        run.stdout
    );
    let files = disk.files();
    assert!(
        files
            .iter()
            .all(|f| !f.contains('.') || f.ends_with(".lock")),
        "{files:?}"
    );
}

#[test]
fn a_log_file_on_a_full_disk_stops_the_build_with_an_error_naming_it() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - head -c 3000000 /dev/zero | tr '\\0' x | fold -w 100\n      - echo after\n",
    );
    let disk = SmallDisk::new(&sandbox, "disk");
    let log = disk.dir.join("build.log");
    let run = run(
        &sandbox,
        &[
            "run",
            "--log-format",
            "json",
            "-m",
            "-s",
            "src",
            "--log-file",
            log.to_str().unwrap(),
        ],
        None,
    );
    run.expect_code(3);
    assert!(run.stderr.contains(log.to_str().unwrap()), "{}", run.stderr);
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
}

#[test]
fn building_a_layer_onto_a_full_disk_fails_naming_the_store_and_leaves_no_blob() {
    let sandbox = Sandbox::new();
    sandbox.write("ctx/Dockerfile", "FROM scratch\nCOPY big.bin /big.bin\n");
    sandbox.write("ctx/big.bin", random(3 << 20));
    // The content store (XDG_CACHE_HOME/buildagent/oci) is on the small disk; the layout the
    // image would be written to is not.
    let disk = SmallDisk::new(&sandbox, "disk");
    let layout = sandbox.path().join("layout");
    let mut command = sandbox.command([
        "image",
        "build",
        "--engine",
        "oci",
        "--output",
        &format!("oci:{}", layout.display()),
        "ctx",
    ]);
    command.env("XDG_CACHE_HOME", &disk.dir);
    let run = Run::from(command.output().unwrap());
    run.expect_code(3);
    assert!(
        run.stderr.contains(disk.dir.to_str().unwrap()),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    // No image was written, and the store holds no blob that is not whole: every blob's name is
    // the digest of its bytes, and no temporary file is left.
    assert!(!layout.join("index.json").exists());
    for file in disk.files() {
        let path = disk.dir.join(&file);
        if path.is_dir() {
            continue;
        }
        let digest = file
            .rsplit_once("blobs/sha256/")
            .unwrap_or_else(|| panic!("a file left outside the blobs: {file}"))
            .1;
        let sum = Command::new("sha256sum").arg(&path).output().unwrap();
        let sum = String::from_utf8_lossy(&sum.stdout);
        assert_eq!(sum.split_whitespace().next(), Some(digest), "{file}");
    }
}

#[test]
fn a_cloudwatch_spill_file_on_a_full_disk_warns_with_the_exact_count_and_the_build_succeeds() {
    let sandbox = Sandbox::new();
    // 20 MB of base64 (it compresses about 1.3x: the spill file outgrows the 2 MiB disk) while
    // the service is unreachable, then a command after it.
    sandbox.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - head -c 15000000 /dev/urandom | base64 -w 1000\n      - echo after\n",
    );
    let disk = SmallDisk::new(&sandbox, "disk");
    let mut command = sandbox.command([
        "run",
        "--log-format",
        "codebuild",
        "-m",
        "-s",
        "src",
        "--log-file",
        "build.log",
        "--cloudwatch-logs",
        "/buildagent/test/spill-full",
        "--log-flush-timeout",
        "0s",
    ]);
    // The spill file goes to the temporary directory; nothing listens on port 9 of loopback.
    command
        .env("TMPDIR", &disk.dir)
        .env("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1");
    let run = Run::from(command.output().unwrap());
    run.expect_code(0);
    let file = std::fs::read_to_string(sandbox.path().join("build.log")).unwrap();
    assert!(file.contains("\nafter\n"), "the build went on");
    // Every line before the warning was for the sink: none arrived, and the warning counts them
    // all, those lost with the spill file included, and says why.
    let warning_at = file
        .lines()
        .position(|l| l.contains("Warning: ") && l.contains("log line(s) were not delivered"))
        .unwrap_or_else(|| panic!("no warning in {}", run.stdout));
    let warning = file.lines().nth(warning_at).unwrap();
    assert!(
        warning.contains(&format!(
            "Warning: {warning_at} log line(s) were not delivered"
        )),
        "{warning}"
    );
    assert!(warning.contains("(0 were)"), "{warning}");
    assert!(
        warning.contains("cannot write the spill file: No space left on device"),
        "{warning}"
    );
    assert_eq!(disk.files(), Vec::<String>::new());
}
