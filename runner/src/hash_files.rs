//! `codebuild-hash-files GLOB...`: one SHA-256 for the files some globs match, for cache keys
//! such as `npm-$(codebuild-hash-files package-lock.json)`.
//!
//! CodeBuild documents the helper only as "a CLI tool that calculates a SHA-256 hash for a set of
//! files in the CodeBuild source directory using glob patterns"; how the files are combined is not
//! published. This implementation does what GitHub Actions' `hashFiles()` does, so the result is
//! easy to reproduce with standard tools:
//!
//! 1. Each pattern selects files with the artifact glob rules (see [`crate::artifacts`]): paths are
//!    `/`-separated and relative to the directory given (the command's working directory); `*`,
//!    `?` and `[...]` stay inside one path segment, `**` spans segments, dot-files match like any
//!    other name, a leading `./` is ignored. A pattern starting with `/` is matched against
//!    absolute paths. A `..` segment is an error.
//! 2. Only files count: a directory selects nothing (`node_modules` alone hashes nothing, write
//!    `node_modules/**/*`). A symbolic link counts as the file it points to; a link to a directory
//!    is skipped, a dangling one is an error. A wildcard walk does not descend into linked
//!    directories. Other special files (sockets, FIFOs, devices) are skipped.
//! 3. The files of all patterns together, each once, are sorted by their path as matched
//!    (relative, or absolute for an absolute pattern) byte by byte, like `LC_ALL=C sort`.
//! 4. The result is SHA-256 over the concatenated 32-byte SHA-256 digests of the files' contents,
//!    in that order, written as 64 lowercase hexadecimal digits. Names, modes and times are not
//!    hashed: renaming a file alone does not change the result, but it can change the order.
//! 5. When no file matches at all, the result is the empty string.
//!
//! In the shell, for files `a` and `b` (already sorted):
//!
//! ```sh
//! for f in a b; do sha256sum "$f" | cut -c1-64 | xxd -r -p; done | sha256sum | cut -c1-64
//! ```
//!
//! ```
//! use buildagent_runner::hash_files::hash_files;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("package-lock.json"), "{}\n")?;
//! let hashed = hash_files(dir.path(), &["package-lock.json", "*.lock"])?;
//! assert_eq!(hashed.files, ["package-lock.json"]);
//! assert_eq!(hashed.unmatched, ["*.lock"]);
//! // printf '{}\n' | sha256sum | cut -c1-64 | xxd -r -p | sha256sum
//! assert_eq!(
//!     hashed.hex,
//!     "99c9eabdf3d25ff2826c4296b31961c421da47bffdeb182ab32394973114c297"
//! );
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::{GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};

use crate::artifacts::collect::{glob, normalize, walk_roots};
use crate::plan::{Environment, Origin};

/// The helper's name on a build's `PATH`.
pub const HELPER_NAME: &str = "codebuild-hash-files";

/// Every helper a build finds on its `PATH`, all links to the same executable (the agent's),
/// which acts as the one it is started as: `codebuild-hash-files`, and the test-sharding pair
/// `codebuild-tests-run` and `codebuild-glob-search` (see [`crate::sharding`]).
pub const HELPER_NAMES: [&str; 3] = [
    HELPER_NAME,
    crate::sharding::TESTS_RUN_NAME,
    crate::sharding::GLOB_SEARCH_NAME,
];

/// The `PATH` a shell uses when none is set (dash's and bash's default), kept behind the helper's
/// directory when the build has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What [`hash_files`] hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashedFiles {
    /// The hash: 64 lowercase hexadecimal digits, or the empty string when no file matched.
    pub hex: String,
    /// The files hashed, in the order hashed: paths as matched (relative to the directory, or
    /// absolute for an absolute pattern), lossily decoded.
    pub files: Vec<String>,
    /// The patterns that selected no file, as given.
    pub unmatched: Vec<String>,
}

/// Why [`hash_files`] could not give a hash.
#[derive(Debug, thiserror::Error)]
pub enum HashFilesError {
    /// A pattern that is not a valid glob, is empty or holds a `..` segment.
    #[error("invalid pattern `{pattern}`: {message}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// A matched file (or a directory on the way) that cannot be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Where the patterns of one kind are matched: the directory (relative patterns) or `/`.
struct Anchor {
    root: PathBuf,
    /// The prefix a matched path gets in [`HashedFiles::files`]: empty, or `/`.
    shown_prefix: &'static str,
    /// Index into the caller's patterns, and the pattern relative to `root`.
    patterns: Vec<(usize, String)>,
}

/// Hashes the files that `patterns` select, relative to `dir` (see the module documentation for
/// the exact rules). A pattern that selects nothing is listed in [`HashedFiles::unmatched`], not
/// an error; an unreadable file is.
pub fn hash_files<S: AsRef<str>>(
    dir: &Path,
    patterns: &[S],
) -> Result<HashedFiles, HashFilesError> {
    let matched = match_files(dir, patterns)?;
    let mut total = Sha256::new();
    for path in &matched.paths {
        total.update(sha256_file(path)?);
    }
    let hex = if matched.files.is_empty() {
        String::new()
    } else {
        to_hex(&total.finalize())
    };
    Ok(HashedFiles {
        hex,
        files: matched.files,
        unmatched: matched.unmatched,
    })
}

/// The files some globs select (see [`match_files`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchedFiles {
    /// The files, each once, sorted by their path as matched (relative to the directory, or
    /// absolute for an absolute pattern) byte by byte, lossily decoded.
    pub files: Vec<String>,
    /// The same files as paths on this machine.
    pub paths: Vec<PathBuf>,
    /// The patterns that selected no file, as given.
    pub unmatched: Vec<String>,
}

/// The files `patterns` select relative to `dir`, with the rules of [`hash_files`] (steps 1 to
/// 3 of the module documentation), without reading them: what `codebuild-glob-search` prints.
pub fn match_files<S: AsRef<str>>(
    dir: &Path,
    patterns: &[S],
) -> Result<MatchedFiles, HashFilesError> {
    let mut relative = Anchor {
        root: dir.to_path_buf(),
        shown_prefix: "",
        patterns: Vec::new(),
    };
    let mut absolute = Anchor {
        root: PathBuf::from("/"),
        shown_prefix: "/",
        patterns: Vec::new(),
    };
    for (i, pattern) in patterns.iter().enumerate() {
        let pattern = pattern.as_ref();
        let invalid = |message: &str| HashFilesError::Pattern {
            pattern: pattern.to_string(),
            message: message.to_string(),
        };
        if pattern.is_empty() {
            return Err(invalid("it is empty"));
        }
        if pattern.split('/').any(|s| s == "..") {
            return Err(invalid("it contains a '..' segment"));
        }
        match pattern.strip_prefix('/') {
            Some(rest) => absolute
                .patterns
                .push((i, rest.trim_start_matches('/').to_string())),
            None => relative.patterns.push((i, normalize(pattern).to_string())),
        }
    }

    // Sorted by the shown path's bytes; each file once.
    let mut found: BTreeMap<Vec<u8>, PathBuf> = BTreeMap::new();
    let mut matched = vec![false; patterns.len()];
    for anchor in [&relative, &absolute] {
        if !anchor.patterns.is_empty() {
            select(anchor, patterns, &mut found, &mut matched)?;
        }
    }

    let mut files = Vec::with_capacity(found.len());
    let mut paths = Vec::with_capacity(found.len());
    for (shown, path) in found {
        files.push(String::from_utf8_lossy(&shown).into_owned());
        paths.push(path);
    }
    let unmatched = patterns
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !**m)
        .map(|(p, _)| p.as_ref().to_string())
        .collect();
    Ok(MatchedFiles {
        files,
        paths,
        unmatched,
    })
}

/// Adds the files `anchor`'s patterns select to `found` (shown path -> real path), marking the
/// patterns that selected something in `matched`.
fn select<S: AsRef<str>>(
    anchor: &Anchor,
    given: &[S],
    found: &mut BTreeMap<Vec<u8>, PathBuf>,
    matched: &mut [bool],
) -> Result<(), HashFilesError> {
    let shown = |relative: &Path| {
        let mut key = anchor.shown_prefix.as_bytes().to_vec();
        key.extend_from_slice(relative.as_os_str().as_bytes());
        key
    };

    // A pattern without wildcards names one path: no walk (`package-lock.json` must not walk
    // `node_modules`).
    let (literal, wild): (Vec<_>, Vec<_>) = anchor
        .patterns
        .iter()
        .partition(|(_, p)| !p.contains(['*', '?', '[', '{', '\\']));
    for (i, pattern) in literal {
        let relative = Path::new(pattern.trim_end_matches('/'));
        let path = anchor.root.join(relative);
        if counts_as_file(&path)? {
            matched[*i] = true;
            found.insert(shown(relative), path);
        }
    }
    if wild.is_empty() {
        return Ok(());
    }

    let mut builder = GlobSetBuilder::new();
    for (i, pattern) in &wild {
        let glob = glob(pattern).map_err(|e| HashFilesError::Pattern {
            pattern: given[*i].as_ref().to_string(),
            message: match e {
                crate::artifacts::ArtifactError::Pattern { source, .. } => source.to_string(),
                other => other.to_string(),
            },
        })?;
        builder.add(glob);
    }
    let globs: GlobSet = builder.build().map_err(|e| HashFilesError::Pattern {
        pattern: wild
            .iter()
            .map(|(i, _)| given[*i].as_ref())
            .collect::<Vec<_>>()
            .join(" "),
        message: e.to_string(),
    })?;
    // Without `**` no match lies deeper than the pattern's segment count.
    let max_depth = if wild.iter().any(|(_, p)| p.contains("**")) {
        usize::MAX
    } else {
        wild.iter()
            .map(|(_, p)| p.split('/').count())
            .max()
            .unwrap_or(1)
    };
    let texts: Vec<&str> = wild.iter().map(|(_, p)| p.as_str()).collect();
    let mut hits = Vec::new();
    for walk_root in walk_roots(&anchor.root, &texts) {
        let walk = walkdir::WalkDir::new(&walk_root)
            .min_depth(1)
            .max_depth(max_depth)
            .follow_links(false)
            .sort_by_file_name();
        for item in walk {
            let item = item.map_err(|e| {
                let path = e.path().unwrap_or(&walk_root).to_path_buf();
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("file system loop"));
                HashFilesError::Read { path, source }
            })?;
            if item.file_type().is_dir() {
                continue;
            }
            let Ok(relative) = item.path().strip_prefix(&anchor.root) else {
                continue;
            };
            globs.matches_into(relative, &mut hits);
            if hits.is_empty() || !counts_as_file(item.path())? {
                continue;
            }
            for &hit in &hits {
                matched[wild[hit].0] = true;
            }
            found.insert(shown(relative), item.path().to_path_buf());
        }
    }
    Ok(())
}

/// Whether `path` is hashed: a regular file, or a link to one. Missing paths, directories (also
/// through a link) and special files are not; a dangling link is an error.
fn counts_as_file(path: &Path) -> Result<bool, HashFilesError> {
    let read_error = |source| HashFilesError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = match path.symlink_metadata() {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(read_error(e)),
    };
    if meta.file_type().is_symlink() {
        let target = path.metadata().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                read_error(io::Error::new(
                    io::ErrorKind::NotFound,
                    "it is a symbolic link to a missing file",
                ))
            } else {
                read_error(e)
            }
        })?;
        return Ok(target.is_file());
    }
    Ok(meta.is_file())
}

/// SHA-256 of a file's contents, read in pieces.
fn sha256_file(path: &Path) -> Result<[u8; 32], HashFilesError> {
    let read_error = |source| HashFilesError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_error)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        }
    }
    Ok(hasher.finalize().into())
}

/// Makes a directory holding a link per helper, [`HELPER_NAMES`] -> `exe` (an executable that
/// acts as each helper when started under its name, such as the agent itself), and puts it in front of `PATH`
/// in `env` (after every layer, so a buildspec or `-e` file that sets `PATH` keeps the helper;
/// without a `PATH`, the shell's default one follows it). The directory is removed when the
/// returned value is dropped: the engine keeps it for the length of the build.
pub(crate) fn helper_on_path(exe: &Path, env: &mut Environment) -> io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("buildagent-bin-")
        .tempdir()?;
    // Searchable by a `run-as` user too; it holds nothing but the link.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    for name in HELPER_NAMES {
        std::os::unix::fs::symlink(exe, dir.path().join(name))?;
    }
    let dir_text = dir.path().to_str().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the temporary directory's path is not valid UTF-8",
        )
    })?;
    put_on_path(dir_text, env);
    Ok(dir)
}

/// The warning a build gets when the helpers cannot be put where its commands run: it names
/// `codebuild-hash-files` first (as it always has), then the others, which are the same
/// executable and missing for the same reason (a fanout's shard otherwise sees only
/// `codebuild-tests-run: not found`).
pub(crate) fn unavailable_warning(why: &dyn std::fmt::Display) -> String {
    format!(
        "{HELPER_NAME} is not available: {why} (nor are {} and {}, the same executable)",
        crate::sharding::TESTS_RUN_NAME,
        crate::sharding::GLOB_SEARCH_NAME
    )
}

/// Puts `dir` in front of `PATH` in `env`, after every layer (see [`helper_on_path`]).
pub(crate) fn put_on_path(dir: &str, env: &mut Environment) {
    let (path, origin) = match env.variables().iter().find(|v| v.name == "PATH") {
        Some(v) if !v.value.is_empty() => (v.value.clone(), v.origin),
        Some(v) => (DEFAULT_PATH.to_string(), v.origin),
        None => (DEFAULT_PATH.to_string(), Origin::Agent),
    };
    env.set("PATH", &format!("{dir}:{path}"), origin, false);
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        dir
    }

    fn hash(dir: &Path, patterns: &[&str]) -> HashedFiles {
        hash_files(dir, patterns).unwrap()
    }

    // Expected values computed independently in a shell, e.g. for `abc` without a newline:
    //   printf abc | sha256sum | cut -c1-64 | xxd -r -p | sha256sum
    const ABC: &str = "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358";
    // printf 'hello\n' (hello.txt), then printf 'world\n' (world.txt):
    //   for f in hello.txt world.txt; do sha256sum $f | cut -c1-64 | xxd -r -p; done | sha256sum
    const HELLO_WORLD: &str = "96cb8058ed58b58f8fc0ad459bacf81108599b403e91674460ccb089f8ebb9db";
    // The same two files in the other order (world.txt first).
    const WORLD_HELLO: &str = "d5bc6aced19287d552f0052d8ed5a90f0e4e09bfcf14d6c0d876e6e98449b2a4";

    #[test]
    fn one_file_is_the_hash_of_its_digest() {
        let dir = tree(&[("package-lock.json", "abc")]);
        let hashed = hash(dir.path(), &["package-lock.json"]);
        assert_eq!(hashed.hex, ABC);
        assert_eq!(hashed.files, ["package-lock.json"]);
        assert!(hashed.unmatched.is_empty());
        // Not the plain digest of the contents (ba7816bf...), which `sha256sum` prints.
        assert_ne!(
            hashed.hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn files_are_hashed_in_path_order_whatever_the_pattern_order() {
        let dir = tree(&[("hello.txt", "hello\n"), ("world.txt", "world\n")]);
        for patterns in [
            &["hello.txt", "world.txt"][..],
            &["world.txt", "hello.txt"],
            &["*.txt"],
            &["w*", "h*", "*.txt"],
        ] {
            let hashed = hash(dir.path(), patterns);
            assert_eq!(hashed.hex, HELLO_WORLD, "{patterns:?}");
            assert_eq!(hashed.files, ["hello.txt", "world.txt"]);
        }
        // Swapping the contents changes the order of the digests, so the result.
        let swapped = tree(&[("hello.txt", "world\n"), ("world.txt", "hello\n")]);
        assert_eq!(hash(swapped.path(), &["*.txt"]).hex, WORLD_HELLO);
    }

    #[test]
    fn globs_follow_the_artifact_rules() {
        let dir = tree(&[
            ("a.json", "1"),
            ("sub/b.json", "2"),
            ("sub/deep/c.json", "3"),
            (".hidden/d.json", "4"),
            ("sub/.e.json", "5"),
            ("notes.txt", "6"),
        ]);
        assert_eq!(hash(dir.path(), &["*.json"]).files, ["a.json"]);
        assert_eq!(
            hash(dir.path(), &["**/*.json"]).files,
            [
                ".hidden/d.json",
                "a.json",
                "sub/.e.json",
                "sub/b.json",
                "sub/deep/c.json"
            ]
        );
        assert_eq!(
            hash(dir.path(), &["sub/*.json"]).files,
            ["sub/.e.json", "sub/b.json"]
        );
        assert_eq!(
            hash(dir.path(), &["./sub/**/*"]).files,
            ["sub/.e.json", "sub/b.json", "sub/deep/c.json"]
        );
        assert_eq!(hash(dir.path(), &["?otes.[tx]xt"]).files, ["notes.txt"]);
        assert_eq!(
            hash(dir.path(), &["{a,notes}.*"]).files,
            ["a.json", "notes.txt"]
        );
    }

    #[test]
    fn paths_sort_bytewise_not_by_walk_order() {
        // `a.txt` ('.' is 0x2e) sorts before `a/b` ('/' is 0x2f), though a walk visits `a` first.
        let dir = tree(&[("a/b", "x"), ("a.txt", "y"), ("B", "z")]);
        assert_eq!(hash(dir.path(), &["**/*"]).files, ["B", "a.txt", "a/b"]);
    }

    #[test]
    fn each_file_is_hashed_once() {
        let dir = tree(&[("package-lock.json", "abc")]);
        let hashed = hash(
            dir.path(),
            &["package-lock.json", "*.json", "**/*", "./package-lock.json"],
        );
        assert_eq!(hashed.files, ["package-lock.json"]);
        assert_eq!(hashed.hex, ABC);
    }

    #[test]
    fn nothing_matched_is_the_empty_string() {
        let dir = tree(&[("sub/file", "x")]);
        let hashed = hash(dir.path(), &["missing.json", "*.lock", "sub"]);
        assert_eq!(hashed.hex, "");
        assert!(hashed.files.is_empty());
        // A directory selects nothing by itself.
        assert_eq!(hashed.unmatched, ["missing.json", "*.lock", "sub"]);
        let partly = hash(dir.path(), &["missing.json", "sub/*"]);
        assert_eq!(partly.files, ["sub/file"]);
        assert_eq!(partly.unmatched, ["missing.json"]);
    }

    #[test]
    fn empty_files_count() {
        // An empty file is a match: SHA-256 of the empty digest e3b0c442..., so
        //   printf '' | sha256sum | cut -c1-64 | xxd -r -p | sha256sum
        let dir = tree(&[("empty", "")]);
        assert_eq!(
            hash(dir.path(), &["empty"]).hex,
            "5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456"
        );
    }

    #[test]
    fn links_count_as_their_target() {
        let dir = tree(&[("real/lock", "abc"), ("real/sub/f", "x")]);
        symlink("real/lock", dir.path().join("link")).unwrap();
        symlink("real", dir.path().join("linkdir")).unwrap();
        assert_eq!(hash(dir.path(), &["link"]).hex, ABC);
        // A link to a directory is skipped, and a walk does not go through it.
        assert_eq!(hash(dir.path(), &["linkdir"]).files, Vec::<String>::new());
        assert_eq!(
            hash(dir.path(), &["**/*"]).files,
            ["link", "real/lock", "real/sub/f"]
        );
        // A dangling link is an error, not a silent change of the key.
        symlink("nowhere", dir.path().join("dangling")).unwrap();
        let error = hash_files(dir.path(), &["dangling"]).unwrap_err();
        assert!(matches!(error, HashFilesError::Read { .. }), "{error}");
        assert!(hash_files(dir.path(), &["*"]).is_err());
    }

    #[test]
    fn an_unreadable_file_is_an_error() {
        let dir = tree(&[("secret", "x")]);
        // Reading /proc/self/mem at offset 0 fails (EIO) for everyone, root included.
        if Path::new("/proc/self/mem").exists() {
            let error = hash_files(dir.path(), &["/proc/self/mem"]).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with("cannot read `/proc/self/mem`"),
                "{error}"
            );
        }
        if !nix::unistd::geteuid().is_root() {
            let path = dir.path().join("secret");
            let mode = std::os::unix::fs::PermissionsExt::from_mode(0o000);
            std::fs::set_permissions(&path, mode).unwrap();
            let error = hash_files(dir.path(), &["secret"]).unwrap_err();
            assert!(error.to_string().starts_with("cannot read"), "{error}");
        }
    }

    #[test]
    fn absolute_patterns_match_absolute_paths() {
        let dir = tree(&[("x/lock", "abc")]);
        let absolute = format!("{}/x/*", dir.path().display());
        let other = tempfile::tempdir().unwrap();
        let hashed = hash(other.path(), &[absolute.as_str()]);
        assert_eq!(hashed.hex, ABC);
        assert_eq!(hashed.files, [format!("{}/x/lock", dir.path().display())]);
    }

    #[test]
    fn bad_patterns_are_errors() {
        let dir = tree(&[]);
        for pattern in ["", "../x", "a/../b", "[", "a/{b"] {
            let error = hash_files(dir.path(), &[pattern]).unwrap_err();
            assert!(
                matches!(error, HashFilesError::Pattern { .. }),
                "{pattern}: {error}"
            );
        }
    }

    #[test]
    fn large_files_are_read_in_pieces() {
        // 200,000 bytes of 'a': more than one read buffer.
        //   head -c 200000 /dev/zero | tr '\0' a | sha256sum | cut -c1-64 | xxd -r -p | sha256sum
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![b'a'; 200_000]).unwrap();
        assert_eq!(
            hash(dir.path(), &["big"]).hex,
            "52fa4c38786c3eb6768f70aa3fd4e36ce84c66b4b6505c6ecc35efd1d96d644e"
        );
    }

    #[test]
    fn the_helper_goes_in_front_of_path_and_its_directory_is_removed() {
        let mut env = Environment::new();
        env.set("PATH", "/usr/bin:/bin", Origin::Buildspec, false);
        let dir = helper_on_path(Path::new("/bin/true"), &mut env).unwrap();
        let link = dir.path().join(HELPER_NAME);
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/bin/true"));
        let expected = format!("{}:/usr/bin:/bin", dir.path().display());
        assert_eq!(env.get("PATH"), Some(expected.as_str()));
        // The layer that set PATH is still the one shown.
        assert_eq!(env.variables()[0].origin, Origin::Buildspec);
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());

        // No PATH at all: the shell's default one follows the helper.
        let mut env = Environment::new();
        let dir = helper_on_path(Path::new("/bin/true"), &mut env).unwrap();
        let expected = format!("{}:{DEFAULT_PATH}", dir.path().display());
        assert_eq!(env.get("PATH"), Some(expected.as_str()));
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
