//! Staging the source: the build runs in a fresh copy unless `-m` asks for the directory itself.
//!
//! For a git work tree the copy holds the tracked files plus the untracked files that are not
//! ignored (`git ls-files --cached --others --exclude-standard`), and `.git` itself so that git
//! commands work in the build; otherwise every file. Modes and symlinks are kept.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plan::SourceInfo;

/// Why the source could not be staged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source directory does not exist or is not a directory.
    #[error("source directory `{path}` does not exist or is not a directory")]
    Missing {
        /// The directory.
        path: PathBuf,
    },
    /// A file could not be copied.
    #[error("cannot copy `{path}`: {source}")]
    Copy {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// git failed to list the files of a work tree.
    #[error("cannot list the files of the git work tree `{path}`: {message}")]
    Git {
        /// The work tree.
        path: PathBuf,
        /// What git said.
        message: String,
    },
}

/// True when `dir` is the top of a git work tree.
pub fn is_git_work_tree(dir: &Path) -> bool {
    dir.join(".git").exists()
}

/// The branch and commit of a git work tree (`CODEBUILD_SOURCE_VERSION`, `..._RESOLVED_...`).
pub fn git_info(dir: &Path) -> SourceInfo {
    if !is_git_work_tree(dir) {
        return SourceInfo::default();
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    SourceInfo {
        version: git(&["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD"),
        resolved_version: git(&["rev-parse", "HEAD"]),
        ..SourceInfo::default()
    }
}

/// Copies the source `from` into the new directory `to`; returns how many files were copied.
pub fn stage(from: &Path, to: &Path) -> Result<usize, SourceError> {
    if !from.is_dir() {
        return Err(SourceError::Missing {
            path: from.to_owned(),
        });
    }
    let copy_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SourceError::Copy { path, source }
    };
    fs::create_dir_all(to).map_err(copy_err(to))?;
    let files = if is_git_work_tree(from) {
        let mut files = git_files(from)?;
        files.extend(walk(from, &from.join(".git")).map_err(copy_err(from))?);
        files
    } else {
        walk(from, from).map_err(copy_err(from))?
    };
    for rel in &files {
        let src = from.join(rel);
        let dst = to.join(rel);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(copy_err(parent))?;
        }
        let meta = match fs::symlink_metadata(&src) {
            Ok(m) => m,
            // A tracked file deleted from the work tree is simply not there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(SourceError::Copy {
                    path: src,
                    source: e,
                })
            }
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&src).map_err(copy_err(&src))?;
            std::os::unix::fs::symlink(target, &dst).map_err(copy_err(&dst))?;
        } else if meta.is_file() {
            fs::copy(&src, &dst).map_err(copy_err(&src))?;
        }
    }
    Ok(files.len())
}

/// Every file and symlink below `dir`, as paths relative to `root`.
fn walk(root: &Path, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn git_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .map_err(|e| SourceError::Git {
            path: dir.to_owned(),
            message: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(SourceError::Git {
            path: dir.to_owned(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    use std::os::unix::ffi::OsStrExt;
    Ok(output
        .stdout
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| PathBuf::from(std::ffi::OsStr::from_bytes(s)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_files_modes_and_symlinks() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        fs::create_dir_all(from.path().join("a/b")).unwrap();
        fs::write(from.path().join("a/b/f.txt"), "x").unwrap();
        fs::write(from.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(
            from.path().join("run.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("a/b/f.txt", from.path().join("link")).unwrap();
        let dest = to.path().join("src");
        assert_eq!(stage(from.path(), &dest).unwrap(), 3);
        assert_eq!(fs::read_to_string(dest.join("a/b/f.txt")).unwrap(), "x");
        let mode = fs::metadata(dest.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_link(dest.join("link")).unwrap(),
            Path::new("a/b/f.txt")
        );
    }

    #[test]
    fn a_git_work_tree_copies_what_git_sees_and_skips_ignored_files() {
        let from = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(from.path())
                .args(args)
                .output()
                .unwrap();
            assert!(
                ok.status.success(),
                "{}",
                String::from_utf8_lossy(&ok.stderr)
            );
        };
        git(&["init", "-q"]);
        fs::write(from.path().join(".gitignore"), "ignored.txt\n").unwrap();
        fs::write(from.path().join("tracked.txt"), "t").unwrap();
        fs::write(from.path().join("ignored.txt"), "i").unwrap();
        fs::write(from.path().join("new.txt"), "n").unwrap();
        git(&["add", "tracked.txt", ".gitignore"]);
        let to = tempfile::tempdir().unwrap();
        stage(from.path(), to.path()).unwrap();
        assert!(to.path().join("tracked.txt").is_file());
        assert!(to.path().join("new.txt").is_file());
        assert!(!to.path().join("ignored.txt").exists());
        assert!(to.path().join(".git/HEAD").is_file());
    }
}
