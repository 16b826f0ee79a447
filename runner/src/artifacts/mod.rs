//! UPLOAD_ARTIFACTS on local disk: collecting the files an artifact names and packaging them.
//!
//! Collection ([`collect`]) follows decisions.md "Artifacts, caches, reports":
//!
//! - `files` and `exclude-paths` are globs (the [`globset`] crate) matched against paths relative
//!   to the base directory, `/`-separated: `*`, `?` and `[...]` stay inside one path segment, `**`
//!   spans segments, and dot-files match like any other name. A leading `./` is ignored.
//! - Patterns select files (and symbolic links); directories are only containers.
//! - `base-directory` is a directory, or a glob of directories whose contents merge at the root of
//!   the artifact. The engine expands `$NAME` and `${NAME}` in it with the build's final
//!   environment ([`expand_vars`]), so `$CODEBUILD_SRC_DIR_source1` names a secondary source.
//! - A pattern that matches nothing is a warning (`Skipping invalid file path <pattern>`); no file at
//!   all is [`ArtifactError::NoMatchingPaths`].
//! - `discard-paths: yes` stores every file by its name alone; two files that end up with the same
//!   name (there, or from two base directories) are [`ArtifactError::NameCollision`].
//! - Symbolic links: with `enable-symlinks: yes` they are stored as links; otherwise a link to a file
//!   inside the source tree is stored as that file, and a link that leaves the tree, dangles or
//!   names a directory is skipped with a warning.
//!
//! Packaging ([`package`]) writes `DIR/<stem>.zip` (or the directory `DIR/<stem>/`): deterministic
//! (entries sorted by name, every timestamp 1980-01-01 00:00, Unix modes kept), compressed on every
//! core, in constant memory, and always through a temporary name in `DIR` renamed at the end, so a
//! failed or stopped build never leaves a partial artifact.
//!
//! ```
//! use buildagent_runner::artifacts::{collect, package, CollectOptions, Note, Packaging};
//! use buildagent_spec::{ArtifactSet, Spanned};
//! use std::sync::atomic::AtomicBool;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let src = tempfile::tempdir()?;
//! std::fs::create_dir_all(src.path().join("dist/css"))?;
//! std::fs::write(src.path().join("dist/app.js"), "app")?;
//! std::fs::write(src.path().join("dist/css/site.css"), "css")?;
//! let set = ArtifactSet {
//!     files: vec![Spanned::synthetic("**/*".to_string())],
//!     base_directory: Some(Spanned::synthetic("dist".to_string())),
//!     ..ArtifactSet::default()
//! };
//! let mut log = Vec::new();
//! let options = CollectOptions::new(src.path());
//! let entries = collect(&set, &options, &mut |note: Note| log.push(note))?;
//! let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
//! assert_eq!(names, ["app.js", "css/site.css"]);
//!
//! let out = tempfile::tempdir()?;
//! let written = package(&entries, out.path(), "artifacts", Packaging::Zip, &AtomicBool::new(false))?;
//! assert_eq!(written.path, out.path().join("artifacts.zip"));
//! assert_eq!(written.files, 2);
//! # Ok(())
//! # }
//! ```

mod chunked;
pub(crate) mod collect;
pub mod s3;
mod zip;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use self::collect::{collect, expand_vars, CollectOptions};
pub use self::zip::write_zip;

/// How an artifact is written to a local directory (`--artifacts-packaging`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Packaging {
    /// One zip file, `DIR/<name>.zip` (the default).
    #[default]
    Zip,
    /// A directory of files, `DIR/<name>/`.
    None,
}

/// Something collection or packaging wants the log to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// An ordinary line, such as `Found 3 file(s)`.
    Info(String),
    /// A problem that does not fail the artifact, such as a pattern that matched nothing.
    Warning(String),
}

/// One file of an artifact, as it will be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name inside the artifact: `/`-separated, relative, never empty.
    pub name: String,
    /// The file on disk (for a followed symbolic link: the link itself, which is read through).
    pub path: PathBuf,
    /// What is stored.
    pub kind: EntryKind,
    /// The modification time to store; `None` (the default): 1980-01-01 00:00, so that builds
    /// are reproducible.
    pub mtime: Option<std::time::SystemTime>,
}

/// What an [`Entry`] stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file's contents.
    File {
        /// The permission bits (`0o644`, `0o755`...).
        mode: u32,
        /// The size when it was collected.
        size: u64,
    },
    /// A symbolic link, stored as a link (`enable-symlinks: yes`).
    Symlink {
        /// Where it points, as written in the link.
        target: PathBuf,
    },
}

/// An artifact that was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The zip file or directory.
    pub path: PathBuf,
    /// How many entries it holds.
    pub files: usize,
    /// Its size on disk: the zip's size, or the total of the files' sizes.
    pub bytes: u64,
}

/// Why an artifact could not be collected or written. Each fails UPLOAD_ARTIFACTS with the phase
/// context `CLIENT_ERROR` and the error's message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// No file matched any pattern of the artifact.
    #[error("no matching artifact paths found")]
    NoMatchingPaths,
    /// Secondary artifacts are defined but the primary artifact has no `files`.
    #[error("no definition for primary artifacts in buildspec")]
    NoPrimaryDefinition,
    /// A `files`, `exclude-paths` or `base-directory` pattern is not a valid glob.
    #[error("invalid artifact path pattern `{pattern}`: {source}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        #[source]
        source: globset::Error,
    },
    /// Two files would be stored under the same name.
    #[error("`{first}` and `{second}` would both be stored as `{name}` in the artifact{hint}")]
    NameCollision {
        /// The name inside the artifact.
        name: String,
        /// The first file (relative to the source directory when it is inside it).
        first: String,
        /// The second file.
        second: String,
        /// `" (discard-paths: yes)"` when that is the cause, else empty.
        hint: &'static str,
    },
    /// A file or directory could not be read, or the destination could not be written.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What was being done (`cannot read`, `cannot write`...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<io::Error>,
    },
    /// The zip writer failed.
    #[error("cannot write `{path}`: {source}")]
    Zip {
        /// The zip file being written (its final name).
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<::zip::result::ZipError>,
    },
    /// The build was stopped (signal or timeout) while the artifact was being written; nothing was
    /// left behind.
    #[error("stopped while writing the artifact")]
    Cancelled,
}

impl ArtifactError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ArtifactError::Io {
            action,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// Writes `entries` into `dir` as `<stem>.zip` or the directory `<stem>/`, replacing what was
/// there, through a temporary name in `dir` (created if missing). When `cancel` becomes true the
/// work stops with [`ArtifactError::Cancelled`] and the temporary file is removed.
pub fn package(
    entries: &[Entry],
    dir: &std::path::Path,
    stem: &str,
    packaging: Packaging,
    cancel: &AtomicBool,
) -> Result<Written, ArtifactError> {
    std::fs::create_dir_all(dir).map_err(|e| ArtifactError::io("cannot create", dir, e))?;
    match packaging {
        Packaging::Zip => {
            let path = dir.join(format!("{stem}.zip"));
            let temp = tempfile::Builder::new()
                .prefix(&format!(".{stem}.zip."))
                .suffix(".partial")
                .tempfile_in(dir)
                .map_err(|e| ArtifactError::io("cannot create a temporary file in", dir, e))?;
            let file = temp
                .as_file()
                .try_clone()
                .map_err(|e| ArtifactError::io("cannot write", temp.path(), e))?;
            write_zip(entries, file, dir, cancel).map_err(|e| match e {
                ArtifactError::Zip { source, .. } => ArtifactError::Zip {
                    path: path.clone(),
                    source,
                },
                other => other,
            })?;
            let bytes = temp
                .as_file()
                .metadata()
                .map_err(|e| ArtifactError::io("cannot read", temp.path(), e))?
                .len();
            // A temporary file is private (0600); the artifact is an ordinary file.
            std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o644))
                .map_err(|e| ArtifactError::io("cannot write", temp.path(), e))?;
            temp.persist(&path)
                .map_err(|e| ArtifactError::io("cannot write", &path, e.error))?;
            Ok(Written {
                path,
                files: entries.len(),
                bytes,
            })
        }
        Packaging::None => {
            let path = dir.join(stem);
            let temp = tempfile::Builder::new()
                .prefix(&format!(".{stem}."))
                .suffix(".partial")
                .tempdir_in(dir)
                .map_err(|e| ArtifactError::io("cannot create a temporary directory in", dir, e))?;
            let bytes = copy_tree(entries, temp.path(), cancel)?;
            std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| ArtifactError::io("cannot write", temp.path(), e))?;
            // Replace a previous artifact: move it aside, move the new one in, remove the old one.
            let old = if path.symlink_metadata().is_ok() {
                let aside = tempfile::Builder::new()
                    .prefix(&format!(".{stem}."))
                    .suffix(".old")
                    .tempdir_in(dir)
                    .map_err(|e| {
                        ArtifactError::io("cannot create a temporary directory in", dir, e)
                    })?;
                let target = aside.path().join(stem);
                std::fs::rename(&path, &target)
                    .map_err(|e| ArtifactError::io("cannot replace", &path, e))?;
                Some(aside)
            } else {
                None
            };
            let temp = temp.keep();
            if let Err(e) = std::fs::rename(&temp, &path) {
                let _ = std::fs::remove_dir_all(&temp);
                return Err(ArtifactError::io("cannot write", &path, e));
            }
            drop(old);
            Ok(Written {
                path,
                files: entries.len(),
                bytes,
            })
        }
    }
}

/// Copies `entries` under `root` (modes kept, links as links); returns the bytes copied.
fn copy_tree(
    entries: &[Entry],
    root: &std::path::Path,
    cancel: &AtomicBool,
) -> Result<u64, ArtifactError> {
    let mut bytes = 0;
    for entry in entries {
        if cancel.load(Ordering::Relaxed) {
            return Err(ArtifactError::Cancelled);
        }
        let dest = root.join(&entry.name);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ArtifactError::io("cannot create", parent, e))?;
        }
        match &entry.kind {
            EntryKind::File { .. } => {
                bytes += std::fs::copy(&entry.path, &dest)
                    .map_err(|e| ArtifactError::io("cannot copy", &entry.path, e))?;
                if let Some(mtime) = entry.mtime {
                    std::fs::File::options()
                        .write(true)
                        .open(&dest)
                        .and_then(|f| f.set_modified(mtime))
                        .map_err(|e| ArtifactError::io("cannot write", &dest, e))?;
                }
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &dest)
                    .map_err(|e| ArtifactError::io("cannot create", &dest, e))?;
            }
        }
    }
    Ok(bytes)
}

/// Everything UPLOAD_ARTIFACTS needs, owned so that it can run on a blocking thread.
#[derive(Clone, Debug)]
pub struct UploadPlan {
    /// The buildspec's `artifacts`, with `base-directory` values already expanded.
    pub artifacts: buildagent_spec::Artifacts,
    /// `CODEBUILD_SRC_DIR`.
    pub source_dir: PathBuf,
    /// Where to write (`-a DIR`); `None`: collect and count only.
    pub destination: Option<PathBuf>,
    /// Zip files or directories.
    pub packaging: Packaging,
    /// Store each file's own modification time instead of the fixed 1980-01-01.
    pub keep_mtime: bool,
}

/// What [`upload`] reports as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A log line or warning.
    Note(Note),
    /// An artifact was written.
    Written {
        /// `None` for the primary artifact, else the secondary artifact's identifier.
        identifier: Option<String>,
        /// Where and how big.
        written: Written,
    },
}

/// The files of one artifact, collected.
#[derive(Clone, Debug)]
pub struct Collected {
    /// `None` for the primary artifact, else the secondary artifact's identifier.
    pub identifier: Option<String>,
    /// The local file name without extension: `artifacts`, or the identifier.
    pub stem: String,
    /// Its files, sorted by name.
    pub entries: Vec<Entry>,
}

/// Collects every artifact of `plan`: the primary one, then each secondary one in file order.
pub fn collect_all(
    plan: &UploadPlan,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Collected>, ArtifactError> {
    let artifacts = &plan.artifacts;
    if artifacts.primary.files.is_empty() && !artifacts.secondary.is_empty() {
        return Err(ArtifactError::NoPrimaryDefinition);
    }
    let mut options = CollectOptions::new(&plan.source_dir);
    if let Some(dir) = &plan.destination {
        options.skip(dir);
    }
    options.keep_mtime(plan.keep_mtime);
    let mut notes = |n: Note| progress(Progress::Note(n));
    let mut collected = vec![Collected {
        identifier: None,
        stem: "artifacts".to_string(),
        entries: collect(&artifacts.primary, &options, &mut notes)?,
    }];
    if artifacts.secondary.is_empty() {
        notes(Note::Info(
            "No secondary artifacts defined in buildspec".into(),
        ));
    }
    for secondary in &artifacts.secondary {
        let id = secondary.identifier.value.clone();
        notes(Note::Info(format!(
            "Preparing to copy secondary artifacts {id}"
        )));
        let entries = collect(&secondary.artifact, &options, &mut notes)?;
        collected.push(Collected {
            identifier: Some(id.clone()),
            stem: id,
            entries,
        });
    }
    Ok(collected)
}

/// Collects every artifact of `plan` ([`collect_all`]) and, when it has a destination, writes
/// them: `artifacts.zip` and `<identifier>.zip` (or directories). Nothing is written unless every
/// artifact was collected.
pub fn upload(
    plan: &UploadPlan,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ArtifactError> {
    let collected = collect_all(plan, progress)?;
    let Some(dir) = &plan.destination else {
        let total: usize = collected.iter().map(|c| c.entries.len()).sum();
        progress(Progress::Note(Note::Info(format!(
            "{total} artifact file(s) collected; not written (no artifacts directory given)"
        ))));
        return Ok(());
    };
    for artifact in collected {
        let written = package(
            &artifact.entries,
            dir,
            &artifact.stem,
            plan.packaging,
            cancel,
        )?;
        progress(Progress::Written {
            identifier: artifact.identifier,
            written,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &std::path::Path) -> Vec<Entry> {
        let path = dir.join("a.txt");
        std::fs::write(&path, "alpha").unwrap();
        vec![Entry {
            name: "a.txt".into(),
            path,
            kind: EntryKind::File {
                mode: 0o644,
                size: 5,
            },
            mtime: None,
        }]
    }

    #[test]
    fn a_cancelled_package_leaves_nothing_behind() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        for packaging in [Packaging::Zip, Packaging::None] {
            let err = package(
                &entries(src.path()),
                out.path(),
                "artifacts",
                packaging,
                &AtomicBool::new(true),
            )
            .unwrap_err();
            assert!(matches!(err, ArtifactError::Cancelled), "{err}");
        }
        let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_new_zip_replaces_the_old_one_whole() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("artifacts.zip"), "old").unwrap();
        let written = package(
            &entries(src.path()),
            out.path(),
            "artifacts",
            Packaging::Zip,
            &AtomicBool::new(false),
        )
        .unwrap();
        let archive = ::zip::ZipArchive::new(std::fs::File::open(&written.path).unwrap()).unwrap();
        assert_eq!(archive.len(), 1);
        let mode = std::fs::metadata(&written.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
    }
}
