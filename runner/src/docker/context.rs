//! The build context: the files of a directory that the engine builds from, chosen by
//! `.dockerignore` ([`super::dockerignore`]) and written as a tar archive.
//!
//! [`BuildContext::scan`] walks the directory once, in name order, without following links, and
//! keeps what `.dockerignore` lets through; [`BuildContext::write_tar`] then writes the archive
//! the engine's `/build` endpoint reads, as the docker CLI does:
//!
//! - files, directories and symbolic links (as links), with their permission bits and
//!   modification times, owned by root (uid and gid 0, no names); a file with several names in
//!   the context is stored once and then as hard links to it;
//! - sockets, FIFOs and device files are left out (the docker CLI keeps FIFOs and devices);
//! - the rules are `<Dockerfile>.dockerignore` beside the Dockerfile when there is one (as
//!   BuildKit reads it), else the context's `.dockerignore`;
//! - the Dockerfile and `.dockerignore` are always sent, whatever `.dockerignore` says (the
//!   engine needs them; it leaves them out of `COPY . /` itself when they are excluded);
//! - a Dockerfile outside the context goes in as `.dockerfile.<20 random hex digits>`, and that
//!   name is added to the archive's `.dockerignore` so `COPY` never sees it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::dockerignore::{DockerIgnore, PatternError};

/// Why a context cannot be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The context is not a directory (or does not exist).
    #[error("the build context `{}` is not a directory", path.display())]
    NotADirectory {
        /// The context as given.
        path: PathBuf,
    },
    /// The Dockerfile does not exist or is not a file.
    #[error("the Dockerfile `{}` does not exist", path.display())]
    NoDockerfile {
        /// The Dockerfile's path.
        path: PathBuf,
    },
    /// `.dockerignore` has a pattern that cannot be used.
    #[error("{}: {source}", path.display())]
    DockerIgnore {
        /// The `.dockerignore` file.
        path: PathBuf,
        /// The pattern and its line.
        #[source]
        source: PatternError,
    },
    /// A file or directory of the context cannot be read.
    #[error("cannot read `{}` in the build context: {source}", path.display())]
    Unreadable {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// One member of the archive.
#[derive(Debug, Clone)]
struct Entry {
    /// Relative to the context.
    path: PathBuf,
    kind: Kind,
    mode: u32,
    mtime: u64,
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File {
        len: u64,
    },
    Symlink(PathBuf),
    /// Another name of a file stored earlier in the archive.
    HardLink(PathBuf),
}

/// The files of a context directory that go to the engine, and where the Dockerfile is among them.
#[derive(Debug, Clone)]
pub struct BuildContext {
    root: PathBuf,
    entries: Vec<Entry>,
    dockerfile_path: PathBuf,
    dockerfile_name: String,
    /// The Dockerfile's contents when it lies outside the context (sent under `dockerfile_name`).
    outside_dockerfile: Option<Vec<u8>>,
    /// `.dockerignore`'s contents, when the archive must carry a rewritten one.
    dockerignore_text: Option<Vec<u8>>,
}

impl BuildContext {
    /// Walks `root` and keeps what its `.dockerignore` lets through. `dockerfile` is the
    /// Dockerfile's path as the user gave it (relative to the current directory, as with
    /// `docker build -f`); `None` is `root/Dockerfile`.
    pub fn scan(root: &Path, dockerfile: Option<&Path>) -> Result<BuildContext, ContextError> {
        if !root.is_dir() {
            return Err(ContextError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        let unreadable = |path: &Path| {
            let path = path.to_path_buf();
            move |source: io::Error| ContextError::Unreadable { path, source }
        };
        let root = root.canonicalize().map_err(unreadable(root))?;
        let dockerfile_path = match dockerfile {
            Some(path) => std::path::absolute(path).map_err(unreadable(path))?,
            None => root.join("Dockerfile"),
        };
        if !dockerfile_path.is_file() {
            return Err(ContextError::NoDockerfile {
                path: dockerfile.map_or(dockerfile_path.clone(), Path::to_path_buf),
            });
        }
        let real_dockerfile = dockerfile_path
            .canonicalize()
            .map_err(unreadable(&dockerfile_path))?;
        let inside = real_dockerfile.strip_prefix(&root).ok().map(slash_path);

        let read_optional = |path: &Path| match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unreadable(path)(e)),
        };
        let root_ignore = root.join(".dockerignore");
        let ignore_text = read_optional(&root_ignore)?;
        // `<Dockerfile>.dockerignore` beside the Dockerfile wins over the context's.
        let mut specific_name = dockerfile_path.file_name().unwrap_or_default().to_owned();
        specific_name.push(".dockerignore");
        let specific = dockerfile_path.with_file_name(specific_name);
        let (rules_path, rules) = match read_optional(&specific)? {
            Some(text) => (specific, Some(text)),
            None => (root_ignore, ignore_text.clone()),
        };
        let mut ignore = match &rules {
            Some(bytes) => {
                DockerIgnore::parse(&String::from_utf8_lossy(bytes)).map_err(|source| {
                    ContextError::DockerIgnore {
                        path: rules_path.clone(),
                        source,
                    }
                })?
            }
            None => DockerIgnore::default(),
        };
        ignore.keep(".dockerignore");
        if let Some(rel) = &inside {
            ignore.keep(rel);
        }

        let entries = walk(&root, &ignore)?;
        let (dockerfile_name, outside_dockerfile, dockerignore_text) = match inside {
            Some(rel) => (rel, None, None),
            None => {
                let contents =
                    std::fs::read(&dockerfile_path).map_err(unreadable(&dockerfile_path))?;
                let name = format!(".dockerfile.{}", random_hex(20));
                let mut ignore = ignore_text.unwrap_or_else(|| b".dockerignore".to_vec());
                ignore.extend_from_slice(format!("\n{name}\n").as_bytes());
                (name, Some(contents), Some(ignore))
            }
        };
        Ok(BuildContext {
            root,
            entries,
            dockerfile_path,
            dockerfile_name,
            outside_dockerfile,
            dockerignore_text,
        })
    }

    /// The context directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The Dockerfile on disk.
    pub fn dockerfile_path(&self) -> &Path {
        &self.dockerfile_path
    }

    /// The Dockerfile's name inside the archive, for the engine's `dockerfile` parameter.
    pub fn dockerfile_name(&self) -> &str {
        &self.dockerfile_name
    }

    /// The paths the archive holds (relative to the context; directories too), in archive order,
    /// without a Dockerfile from outside the context.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.entries.iter().map(|e| e.path.as_path())
    }

    /// How many files the archive holds, and their total size in bytes (as scanned).
    pub fn size(&self) -> (usize, u64) {
        self.entries
            .iter()
            .fold((0, 0), |(n, bytes), e| match e.kind {
                Kind::File { len } => (n + 1, bytes + len),
                _ => (n, bytes),
            })
    }

    /// Writes the archive to `out` and returns it. A file that cannot be read, or that
    /// changed size while it was written, is an error naming it.
    pub fn write_tar<W: Write>(&self, out: W) -> io::Result<W> {
        let mut tar = tar::Builder::new(out);
        for entry in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(entry.mode & 0o7777);
            header.set_mtime(entry.mtime);
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(0);
            match &entry.kind {
                Kind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    tar.append_data(&mut header, &entry.path, io::empty())?;
                }
                Kind::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    tar.append_link(&mut header, &entry.path, target)?;
                }
                Kind::HardLink(first) => {
                    header.set_entry_type(tar::EntryType::Link);
                    tar.append_link(&mut header, &entry.path, first)?;
                }
                Kind::File { .. } => {
                    let full = self.root.join(&entry.path);
                    let named =
                        |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", full.display()));
                    let is_dockerignore = entry.path == Path::new(".dockerignore");
                    if let (true, Some(text)) = (is_dockerignore, &self.dockerignore_text) {
                        header.set_entry_type(tar::EntryType::Regular);
                        header.set_size(text.len() as u64);
                        tar.append_data(&mut header, &entry.path, text.as_slice())?;
                        continue;
                    }
                    let file = File::open(&full).map_err(named)?;
                    // The size now, not at the scan: the header must match what follows.
                    let len = file.metadata().map_err(named)?.len();
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(len);
                    let exact = Exact {
                        inner: file,
                        left: len,
                        path: &full,
                    };
                    tar.append_data(&mut header, &entry.path, exact)?;
                }
            }
        }
        let has_dockerignore = self
            .entries
            .iter()
            .any(|e| e.path == Path::new(".dockerignore"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut extra = Vec::new();
        if let Some(text) = &self.dockerignore_text {
            if !has_dockerignore {
                extra.push((".dockerignore", text.as_slice()));
            }
        }
        if let Some(contents) = &self.outside_dockerfile {
            extra.push((self.dockerfile_name.as_str(), contents.as_slice()));
        }
        for (name, contents) in extra {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o600);
            header.set_mtime(now);
            header.set_size(contents.len() as u64);
            tar.append_data(&mut header, name, contents)?;
        }
        tar.into_inner()
    }
}

/// Reads exactly `left` bytes from a file, or fails: a file that shrinks while it is sent would
/// otherwise leave the archive misaligned, and one that grows would be cut silently.
struct Exact<'a> {
    inner: File,
    left: u64,
    path: &'a Path,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: the file shrank while it was sent", self.path.display()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The context's members that `.dockerignore` keeps, in walk order.
fn walk(root: &Path, ignore: &DockerIgnore) -> Result<Vec<Entry>, ContextError> {
    let mut entries = Vec::new();
    let mut seen: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut it = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(item) = it.next() {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            ContextError::Unreadable {
                path,
                source: e.into(),
            }
        })?;
        let rel = item
            .path()
            .strip_prefix(root)
            .expect("walkdir yields paths under its root")
            .to_path_buf();
        let rel_text = slash_path(&rel);
        let file_type = item.file_type();
        if ignore.is_excluded(&rel_text) {
            if file_type.is_dir() && !ignore.must_walk_excluded_dir(&rel_text) {
                it.skip_current_dir();
            }
            continue;
        }
        let meta = item.metadata().map_err(|e| ContextError::Unreadable {
            path: item.path().to_path_buf(),
            source: e.into(),
        })?;
        let kind = if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_symlink() {
            let target =
                std::fs::read_link(item.path()).map_err(|source| ContextError::Unreadable {
                    path: item.path().to_path_buf(),
                    source,
                })?;
            Kind::Symlink(target)
        } else if file_type.is_file() {
            if meta.nlink() > 1 {
                match seen.get(&(meta.dev(), meta.ino())) {
                    Some(first) => Kind::HardLink(first.clone()),
                    None => {
                        seen.insert((meta.dev(), meta.ino()), rel.clone());
                        Kind::File { len: meta.len() }
                    }
                }
            } else {
                Kind::File { len: meta.len() }
            }
        } else {
            // Sockets, FIFOs and device files are left out (the docker CLI stores FIFOs and
            // devices as special entries; a build has no use for them).
            continue;
        };
        entries.push(Entry {
            path: rel,
            kind,
            mode: meta.mode(),
            mtime: u64::try_from(meta.mtime()).unwrap_or(0),
        });
    }
    Ok(entries)
}

/// A relative path with `/` separators, as `.dockerignore` patterns see it.
fn slash_path(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// `n` random lowercase hex digits (from the standard library's randomly seeded hasher).
fn random_hex(n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < n {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(out.len());
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        dir
    }

    fn members(ctx: &BuildContext) -> Vec<(String, tar::EntryType, Vec<u8>)> {
        let bytes = ctx.write_tar(Vec::new()).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let kind = e.header().entry_type();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, kind, data)
            })
            .collect()
    }

    fn names(ctx: &BuildContext) -> Vec<String> {
        members(ctx).into_iter().map(|(n, _, _)| n).collect()
    }

    #[test]
    fn dockerignore_leaves_files_out_but_never_the_dockerfile() {
        let dir = tree(&[
            ("Dockerfile", "FROM scratch\n"),
            (
                ".dockerignore",
                "secret.txt\n*.log\nbuild\n!build/keep\nDockerfile\n.dockerignore\n",
            ),
            ("secret.txt", "no"),
            ("a.log", "no"),
            ("sub/a.log", "yes"),
            ("build/out", "no"),
            ("build/keep", "yes"),
            ("app.txt", "yes"),
        ]);
        let ctx = BuildContext::scan(dir.path(), None).unwrap();
        assert_eq!(ctx.dockerfile_name(), "Dockerfile");
        assert_eq!(
            names(&ctx),
            [
                ".dockerignore",
                "Dockerfile",
                "app.txt",
                "build/keep",
                "sub",
                "sub/a.log"
            ]
        );
        assert_eq!(ctx.size().0, 5);
    }

    #[test]
    fn modes_links_and_owners_are_kept() {
        let dir = tree(&[("Dockerfile", "FROM scratch\n"), ("run.sh", "#!/bin/sh\n")]);
        let script = dir.path().join("run.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("run.sh", dir.path().join("link")).unwrap();
        std::fs::hard_link(&script, dir.path().join("same.sh")).unwrap();
        let ctx = BuildContext::scan(dir.path(), None).unwrap();
        let bytes = ctx.write_tar(Vec::new()).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            seen.push((name, h.entry_type(), h.mode().unwrap(), link));
        }
        assert_eq!(
            seen,
            [
                ("Dockerfile".into(), tar::EntryType::Regular, 0o644, None),
                (
                    "link".into(),
                    tar::EntryType::Symlink,
                    0o777,
                    Some("run.sh".into())
                ),
                ("run.sh".into(), tar::EntryType::Regular, 0o750, None),
                (
                    "same.sh".into(),
                    tar::EntryType::Link,
                    0o750,
                    Some("run.sh".into())
                ),
            ]
        );
    }

    #[test]
    fn a_dockerfile_outside_the_context_gets_a_hidden_name() {
        let dir = tree(&[("ctx/app.txt", "x"), ("Dockerfile.dev", "FROM scratch\n")]);
        let ctx = BuildContext::scan(
            &dir.path().join("ctx"),
            Some(&dir.path().join("Dockerfile.dev")),
        )
        .unwrap();
        let name = ctx.dockerfile_name().to_string();
        assert!(
            name.starts_with(".dockerfile.") && name.len() == 32,
            "{name}"
        );
        let m = members(&ctx);
        assert_eq!(m[0].0, "app.txt");
        assert_eq!(m[1].0, ".dockerignore");
        assert_eq!(
            String::from_utf8_lossy(&m[1].2),
            format!(".dockerignore\n{name}\n")
        );
        assert_eq!(
            (m[2].0.as_str(), m[2].2.as_slice()),
            (name.as_str(), &b"FROM scratch\n"[..])
        );
    }

    #[test]
    fn a_dockerfile_in_a_subdirectory_is_named_by_its_path() {
        let dir = tree(&[
            ("docker/Dockerfile", "FROM scratch\n"),
            (".dockerignore", "docker\n"),
        ]);
        let file = dir.path().join("docker/Dockerfile");
        let ctx = BuildContext::scan(dir.path(), Some(&file)).unwrap();
        assert_eq!(ctx.dockerfile_name(), "docker/Dockerfile");
        assert_eq!(names(&ctx), [".dockerignore", "docker/Dockerfile"]);
    }

    #[test]
    fn a_dockerfile_specific_ignore_file_wins() {
        let dir = tree(&[
            ("Dockerfile", "FROM scratch\n"),
            ("app.Dockerfile", "FROM scratch\n"),
            ("app.Dockerfile.dockerignore", "b.txt\n"),
            (".dockerignore", "a.txt\n"),
            ("a.txt", "a"),
            ("b.txt", "b"),
        ]);
        let ctx = BuildContext::scan(dir.path(), None).unwrap();
        assert!(!names(&ctx).contains(&"a.txt".to_string()));
        assert!(names(&ctx).contains(&"b.txt".to_string()));
        let file = dir.path().join("app.Dockerfile");
        let ctx = BuildContext::scan(dir.path(), Some(&file)).unwrap();
        assert!(names(&ctx).contains(&"a.txt".to_string()));
        assert!(!names(&ctx).contains(&"b.txt".to_string()));
    }

    #[test]
    fn bad_input_is_named() {
        let dir = tree(&[("app.txt", "x")]);
        let err = BuildContext::scan(&dir.path().join("nope"), None).unwrap_err();
        assert!(matches!(err, ContextError::NotADirectory { .. }), "{err}");
        let err = BuildContext::scan(dir.path(), None).unwrap_err();
        assert!(matches!(err, ContextError::NoDockerfile { .. }), "{err}");
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "ok\n[oops\n").unwrap();
        let err = BuildContext::scan(dir.path(), None).unwrap_err();
        assert!(
            err.to_string().contains("line 2: bad pattern `[oops`"),
            "{err}"
        );
    }
}
