//! Extracting a source zip without ever writing outside the target directory.
//!
//! An entry is refused, and the whole extraction fails, when its name is absolute, holds a `..`
//! segment (`\` counts as a separator, as zips made on Windows use it) or a NUL, or when it is a
//! symbolic link whose target is absolute or leads out of the target, directly or through other
//! links. Links are made after every file and directory, so no entry is ever written through a
//! link, and each one is checked where it resolves once all exist. Unix modes are kept
//! (executable scripts stay executable).

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// Why a zip could not be extracted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZipError {
    /// Not a zip, or a damaged one.
    #[error("not a valid zip file: {message}")]
    Corrupt {
        /// What the reader said.
        message: String,
    },
    /// An entry would be written outside the target directory.
    #[error("the entry `{name}` would be written outside the source directory")]
    Escapes {
        /// The entry's name.
        name: String,
    },
    /// A symbolic link points outside the target directory.
    #[error("the symbolic link `{name}` points outside the source directory (to `{target}`)")]
    LinkEscapes {
        /// The entry's name.
        name: String,
        /// Where it points.
        target: String,
    },
    /// Writing failed.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Extracts the zip `file` into `dest` (created if missing); returns how many entries were
/// written.
pub fn extract(file: fs::File, dest: &Path) -> Result<usize, ZipError> {
    let corrupt = |e: ::zip::result::ZipError| ZipError::Corrupt {
        message: e.to_string(),
    };
    let write = |path: &Path| {
        let path = path.to_owned();
        move |source| ZipError::Write { path, source }
    };
    let mut archive = ::zip::ZipArchive::new(io::BufReader::new(file)).map_err(corrupt)?;
    fs::create_dir_all(dest).map_err(write(dest))?;
    let mut links = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(corrupt)?;
        let name = entry.name().map_err(corrupt)?.into_owned();
        let rel = safe_relative(&name).ok_or_else(|| ZipError::Escapes { name: name.clone() })?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let path = dest.join(&rel);
        if entry.is_symlink() {
            let mut target = String::new();
            entry
                .read_to_string(&mut target)
                .map_err(|e| ZipError::Corrupt {
                    message: format!("`{name}`: {e}"),
                })?;
            // A link is checked by where its target lands, from the link's own directory.
            let landing = rel.parent().unwrap_or(Path::new("")).join(&target);
            if Path::new(&target).is_absolute() || normalize(&landing).is_none() {
                return Err(ZipError::LinkEscapes { name, target });
            }
            links.push((name, path, target));
            continue;
        }
        if entry.is_dir() {
            fs::create_dir_all(&path).map_err(write(&path))?;
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(write(parent))?;
        }
        let mut out = fs::File::create(&path).map_err(write(&path))?;
        io::copy(&mut entry, &mut out).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => ZipError::Corrupt {
                message: format!("`{name}`: {e}"),
            },
            _ => ZipError::Write {
                path: path.clone(),
                source: e,
            },
        })?;
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            let mode = (mode & 0o777) | 0o600;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(write(&path))?;
        }
    }
    let count = archive.len();
    for (_, path, target) in &links {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(write(parent))?;
        }
        std::os::unix::fs::symlink(target, path).map_err(write(path))?;
    }
    // Links through links (`a -> b/..` with `b -> .`) can still lead out: resolve each.
    let root = fs::canonicalize(dest).map_err(write(dest))?;
    for (name, path, target) in links {
        if let Ok(resolved) = fs::canonicalize(&path) {
            if !resolved.starts_with(&root) {
                return Err(ZipError::LinkEscapes { name, target });
            }
        }
    }
    Ok(count)
}

/// The entry name as a relative path inside the target, or `None` when it would leave it.
fn safe_relative(name: &str) -> Option<PathBuf> {
    if name.contains('\0') {
        return None;
    }
    let unified = name.replace('\\', "/");
    if unified.starts_with('/') {
        return None;
    }
    normalize(Path::new(&unified))
}

/// `path` with `.` removed and `..` applied, or `None` when it is absolute or climbs above its
/// start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(entries: &[(&str, Option<&str>, &[u8])]) -> fs::File {
        let mut file = tempfile::tempfile().unwrap();
        {
            let mut w = ::zip::ZipWriter::new(&mut file);
            for (name, link, data) in entries {
                let options = ::zip::write::SimpleFileOptions::default().unix_permissions(0o755);
                match link {
                    Some(target) => w.add_symlink(*name, *target, options).unwrap(),
                    None => {
                        w.start_file(*name, options).unwrap();
                        w.write_all(data).unwrap();
                    }
                }
            }
            w.finish().unwrap();
        }
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(0)).unwrap();
        file
    }

    #[test]
    fn files_modes_and_inner_links_are_extracted() {
        let dir = tempfile::tempdir().unwrap();
        let zip = zip_of(&[
            ("a/run.sh", None, b"#!/bin/sh\n"),
            ("a/link", Some("run.sh"), b""),
        ]);
        assert_eq!(extract(zip, dir.path()).unwrap(), 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("a/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(fs::read(dir.path().join("a/link")).unwrap(), b"#!/bin/sh\n");
    }

    #[test]
    fn escaping_entries_are_refused() {
        for (name, link) in [
            ("../evil", None),
            ("a/../../evil", None),
            ("/etc/evil", None),
            ("..\\evil", None),
            ("a/link", Some("../../etc")),
            ("link", Some("/etc/passwd")),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("src");
            let e = extract(zip_of(&[(name, link, b"x")]), &dest).unwrap_err();
            assert!(
                matches!(e, ZipError::Escapes { .. } | ZipError::LinkEscapes { .. }),
                "{name}: {e}"
            );
            assert!(!dir.path().join("evil").exists());
        }
        let dir = tempfile::tempdir().unwrap();
        let zip = zip_of(&[("b", Some("."), b""), ("a", Some("b/.."), b"")]);
        assert!(matches!(
            extract(zip, &dir.path().join("src")),
            Err(ZipError::LinkEscapes { .. })
        ));
    }

    #[test]
    fn a_corrupt_zip_is_an_error() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"not a zip at all").unwrap();
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(0)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            extract(file, dir.path()),
            Err(ZipError::Corrupt { .. })
        ));
    }
}
