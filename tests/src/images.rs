//! Build images for tests, made on the local base image (busybox, no internet) with files added
//! from this machine or written by the test: a `runtimes.yml`, the host's docker CLI, the agent's
//! own executable, and the shared libraries a dynamically linked program needs (found with
//! `ldd`, copied to the same paths, so a glibc program runs in the busybox image).
//!
//! Each image has a tag of its own and is removed from the engine when its [`TestImage`] is
//! dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::services;

/// A file to put in a test image.
pub enum Content {
    /// This text.
    Text(String),
    /// A copy of this machine's file (links followed).
    HostFile(PathBuf),
}

/// An image in the engine, removed on drop.
pub struct TestImage {
    tag: String,
}

impl TestImage {
    /// Builds `buildagent-test/<name>-<unique>:latest` from the base image with `files` (path in
    /// the image, content) and the Dockerfile lines `tail` (`ENTRYPOINT`, `ENV`...), with the
    /// docker CLI. Panics, with the engine's output, when the build fails.
    pub fn build(name: &str, files: &[(String, Content)], tail: &str) -> TestImage {
        let base = services::base_image();
        let context = tempfile::Builder::new()
            .prefix("buildagent-image-")
            .tempdir()
            .expect("a temporary directory");
        let root = context.path().join("root");
        std::fs::create_dir_all(&root).expect("create the context");
        for (path, content) in files {
            let dest = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().expect("a file path")).expect("create dirs");
            match content {
                Content::Text(text) => std::fs::write(&dest, text).expect("write a file"),
                Content::HostFile(src) => {
                    std::fs::copy(src, &dest)
                        .unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
                }
            }
        }
        std::fs::write(
            context.path().join("Dockerfile"),
            format!("FROM {base}\nCOPY root/ /\n{tail}\n"),
        )
        .expect("write the Dockerfile");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tag = format!(
            "buildagent-test/{name}-{}-{nanos}:latest",
            std::process::id()
        );
        let out = Command::new(services::tool("docker"))
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "--network", "host", "-t", &tag])
            .arg(context.path())
            .output()
            .expect("run docker build");
        assert!(
            out.status.success(),
            "cannot build the test image {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestImage { tag }
    }

    /// Its tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", &self.tag])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `program` and every shared library `ldd` lists for it, each at its own path: what a
/// dynamically linked program of this machine needs to run in the base image.
pub fn with_libraries(program: &Path) -> Vec<(String, Content)> {
    let out = Command::new("ldd").arg(program).output().expect("run ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut files = vec![(
        program.display().to_string(),
        Content::HostFile(program.to_path_buf()),
    )];
    // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`;
    // a static program prints `not a dynamic executable` and needs nothing.
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            files.push((path.to_string(), Content::HostFile(PathBuf::from(path))));
        }
    }
    files
}

/// Runs the docker CLI (to check the agent's work from outside) and returns what it did.
pub fn docker<I, S>(args: I) -> crate::Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    crate::Run::from(
        Command::new("docker")
            .args(args)
            .output()
            .expect("run docker"),
    )
}

/// Removes the listed images (references or ids) from the engine when dropped, whatever the
/// test's outcome.
pub struct RemoveImages(pub Vec<String>);

impl Drop for RemoveImages {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker")
                .args(["image", "rm", "-f", image])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
