//! Packing cached paths into an entry and restoring them, with the checks of the module docs.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use globset::{GlobSet, GlobSetBuilder};

use crate::artifacts::collect::{glob, normalize, walk_roots};

/// How many files and bytes an entry holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Regular files and links.
    pub files: u64,
    /// Bytes of the regular files (uncompressed).
    pub bytes: u64,
}

/// One anchor: a directory and the globs (relative to it) of what is cached under it.
#[derive(Debug)]
struct Anchor {
    name: &'static str,
    root: PathBuf,
    patterns: Vec<String>,
    globs: GlobSet,
}

/// The cached `paths`, split by anchor (see the module docs), with the artifact glob rules.
#[derive(Debug)]
pub struct CachePaths {
    anchors: Vec<Anchor>,
    skip: Option<PathBuf>,
}

impl CachePaths {
    /// `paths` as written in the buildspec (variables already expanded): relative ones under
    /// `source_dir`, absolute ones under `/`.
    pub fn new<S: AsRef<str>>(source_dir: &Path, paths: &[S]) -> Result<CachePaths, String> {
        let mut src = Vec::new();
        let mut abs = Vec::new();
        for path in paths {
            let path = path.as_ref();
            if path.split('/').any(|s| s == "..") {
                return Err(format!("invalid cache path {path}: it contains '..'"));
            }
            match path.strip_prefix('/') {
                Some(rest) => abs.push(rest.trim_start_matches('/').to_string()),
                None => src.push(normalize(path).to_string()),
            }
        }
        let mut anchors = Vec::new();
        for (name, root, patterns) in [
            ("src", source_dir.to_path_buf(), src),
            ("abs", PathBuf::from("/"), abs),
        ] {
            if patterns.is_empty() {
                continue;
            }
            let mut builder = GlobSetBuilder::new();
            for p in &patterns {
                builder.add(glob(p).map_err(|e| e.to_string())?);
            }
            let globs = builder.build().map_err(|e| e.to_string())?;
            anchors.push(Anchor {
                name,
                root,
                patterns,
                globs,
            });
        }
        Ok(CachePaths {
            anchors,
            skip: None,
        })
    }

    /// Never packs anything under `dir` (the store itself, when it lies inside a cached path).
    pub fn skip(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.skip = Some(dir.into());
        self
    }

    fn anchor(&self, name: &str) -> Option<&Anchor> {
        self.anchors.iter().find(|a| a.name == name)
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Packs the files of `paths` into `out` as one tar + zstd stream; `notes` gets warnings about
/// files that cannot be cached.
pub fn pack(
    paths: &CachePaths,
    out: impl Write,
    notes: &mut dyn FnMut(String),
) -> io::Result<Stats> {
    let mut encoder = zstd::Encoder::new(out, 3)?;
    encoder.include_checksum(true)?;
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(false);
    let mut stats = Stats::default();
    for anchor in &paths.anchors {
        let patterns: Vec<&str> = anchor.patterns.iter().map(String::as_str).collect();
        for walk_root in walk_roots(&anchor.root, &patterns) {
            let walk = walkdir::WalkDir::new(walk_root)
                .min_depth(1)
                .follow_links(false)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(|e| paths.skip.as_deref() != Some(e.path()));
            for item in walk {
                let item = match item {
                    Ok(item) => item,
                    Err(e) => {
                        notes(format!("Skipping a cached path: {e}"));
                        continue;
                    }
                };
                let file_type = item.file_type();
                if file_type.is_dir() {
                    continue;
                }
                let path = item.path();
                let Some(relative) = path
                    .strip_prefix(&anchor.root)
                    .ok()
                    .and_then(|r| r.to_str())
                else {
                    notes(format!(
                        "Skipping {}: its name is not valid UTF-8",
                        path.display()
                    ));
                    continue;
                };
                if !anchor.globs.is_match(relative) {
                    continue;
                }
                let name = format!("{}/{relative}", anchor.name);
                let meta = item.metadata().map_err(io::Error::from)?;
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                let mut header = tar::Header::new_gnu();
                header.set_mtime(mtime);
                header.set_mode(meta.permissions().mode() & 0o7777);
                if file_type.is_symlink() {
                    let target = std::fs::read_link(path)?;
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    builder.append_link(&mut header, &name, &target)?;
                } else if file_type.is_file() {
                    let file = match File::open(path) {
                        Ok(file) => file,
                        Err(e) => {
                            notes(format!("Skipping {}: {e}", path.display()));
                            continue;
                        }
                    };
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(meta.len());
                    // A file that changes size while it is read fails the save, never the archive.
                    builder.append_data(&mut header, &name, file.take(meta.len()))?;
                    stats.bytes += meta.len();
                } else {
                    notes(format!("Skipping {}: not a regular file", path.display()));
                    continue;
                }
                stats.files += 1;
            }
        }
    }
    builder.into_inner()?.finish()?.flush()?;
    Ok(stats)
}

/// A checked member name: its anchor and its path below the anchor's root.
fn member<'a>(paths: &'a CachePaths, raw: &[u8]) -> io::Result<(&'a Anchor, String)> {
    let name =
        std::str::from_utf8(raw).map_err(|_| invalid("an entry name is not valid UTF-8".into()))?;
    let shown = || name.escape_debug().to_string();
    if name.starts_with('/') {
        return Err(invalid(format!("absolute entry name {}", shown())));
    }
    let (anchor, rest) = name
        .split_once('/')
        .ok_or_else(|| invalid(format!("entry name without an anchor: {}", shown())))?;
    if rest
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('\\'))
        || rest.contains('\0')
    {
        return Err(invalid(format!("unsafe entry name {}", shown())));
    }
    let anchor = paths
        .anchor(anchor)
        .ok_or_else(|| invalid(format!("entry {} is outside the cached paths", shown())))?;
    if !anchor.globs.is_match(rest) {
        return Err(invalid(format!(
            "entry {} is outside the cached paths",
            shown()
        )));
    }
    Ok((anchor, rest.to_string()))
}

/// Fails if a directory on the way to `rest` under `root` exists and is not a real directory
/// (a link, a file); with `create`, makes the missing ones.
fn parents(root: &Path, rest: &str, create: bool) -> io::Result<PathBuf> {
    let mut dir = root.to_path_buf();
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segments.peek().is_none() {
            return Ok(dir.join(segment));
        }
        dir.push(segment);
        match dir.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(invalid(format!(
                    "restoring would write through {}, which is not a directory",
                    dir.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if create {
                    match std::fs::create_dir(&dir) {
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                        _ => {}
                    }
                    if !dir.symlink_metadata()?.is_dir() {
                        return Err(invalid(format!("{} is not a directory", dir.display())));
                    }
                } else {
                    // Nothing below exists yet: nothing to go through.
                    return Ok(root.join(rest));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

fn decoder(input: impl Read) -> io::Result<tar::Archive<impl Read>> {
    Ok(tar::Archive::new(zstd::Decoder::new(input)?))
}

/// Reads a whole entry without writing anything, and fails unless it is complete (zstd checksum)
/// and every member passes the checks of the module docs against `paths` and the disk.
pub fn verify(paths: &CachePaths, input: impl Read) -> io::Result<Stats> {
    let mut archive = decoder(input)?;
    let mut links: HashSet<String> = HashSet::new();
    let mut stats = Stats::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let (anchor, rest) = member(paths, &entry.path_bytes())?;
        let through_link = rest
            .match_indices('/')
            .any(|(i, _)| links.contains(&format!("{}/{}", anchor.name, &rest[..i])));
        if through_link {
            return Err(invalid(format!(
                "entry {}/{rest} goes through a link stored in the archive",
                anchor.name
            )));
        }
        parents(&anchor.root, &rest, false)?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                stats.bytes += io::copy(&mut entry, &mut io::sink())?;
            }
            tar::EntryType::Symlink => {
                links.insert(format!("{}/{rest}", anchor.name));
            }
            other => {
                return Err(invalid(format!(
                    "entry {}/{rest} has an unsupported type ({other:?})",
                    anchor.name
                )))
            }
        }
        stats.files += 1;
    }
    // Read to the end so that the zstd checksum is checked.
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    Ok(stats)
}

/// Restores an entry that [`verify`] accepted, checking every member again; never follows a link
/// and replaces an existing file or link rather than writing through it.
pub fn unpack(paths: &CachePaths, input: impl Read) -> io::Result<Stats> {
    let mut archive = decoder(input)?;
    let mut stats = Stats::default();
    let mut links: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let (anchor, rest) = member(paths, &entry.path_bytes())?;
        let target = parents(&anchor.root, &rest, true)?;
        if let Some(parent) = target.parent() {
            if links.iter().any(|l| parent.starts_with(l)) {
                return Err(invalid(format!("{} goes through a link", target.display())));
            }
        }
        match target.symlink_metadata() {
            Ok(m) if m.is_dir() => {
                return Err(invalid(format!(
                    "{} is a directory on disk",
                    target.display()
                )))
            }
            Ok(_) => std::fs::remove_file(&target)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let header = entry.header();
        let mode = header.mode()? & 0o7777;
        let mtime = UNIX_EPOCH + Duration::from_secs(header.mtime()?);
        match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                // create_new: never opens an existing file or follows a link.
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&target)?;
                stats.bytes += io::copy(&mut entry, &mut file)?;
                file.set_permissions(std::fs::Permissions::from_mode(mode))?;
                file.set_modified(mtime)?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()?
                    .ok_or_else(|| invalid(format!("link {} has no target", target.display())))?;
                std::os::unix::fs::symlink(&link, &target)?;
                set_link_mtime(&target, mtime);
                links.insert(target.clone());
            }
            other => {
                return Err(invalid(format!(
                    "entry {} has an unsupported type ({other:?})",
                    target.display()
                )))
            }
        }
        stats.files += 1;
    }
    Ok(stats)
}

/// Sets a link's own modification time (best effort: some systems cannot).
fn set_link_mtime(path: &Path, mtime: SystemTime) {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let since = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    let time = TimeSpec::from_duration(since);
    let _ = utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &time,
        &time,
        UtimensatFlags::NoFollowSymlink,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn paths(src: &Path, list: &[&str]) -> CachePaths {
        CachePaths::new(src, list).unwrap()
    }

    /// An archive with the given members, as tar + zstd.
    fn archive(members: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = zstd::Encoder::new(&mut out, 1).unwrap();
            encoder.include_checksum(true).unwrap();
            {
                let mut tar = tar::Builder::new(&mut encoder);
                for (name, link, data) in members {
                    let mut header = tar::Header::new_gnu();
                    header.set_mode(0o644);
                    header.set_mtime(1_000_000);
                    // Raw names: Header::set_path refuses `..`, a hostile archive does not.
                    let bytes = name.as_bytes();
                    header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
                    match link {
                        Some(target) => {
                            header.set_entry_type(tar::EntryType::Symlink);
                            header.set_link_name(target).unwrap();
                            header.set_size(0);
                        }
                        None => {
                            header.set_entry_type(tar::EntryType::Regular);
                            header.set_size(data.len() as u64);
                        }
                    }
                    header.set_cksum();
                    tar.append(&header, *data).unwrap();
                }
                tar.finish().unwrap();
            }
            encoder.finish().unwrap();
        }
        out
    }

    fn restore(paths: &CachePaths, data: &[u8]) -> io::Result<Stats> {
        verify(paths, data)?;
        unpack(paths, data)
    }

    /// Every file under `dir`, as relative names.
    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                e.path().strip_prefix(dir).unwrap().display().to_string()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_round_trip_keeps_modes_links_and_times() {
        let src = tempfile::tempdir().unwrap();
        let deps = src.path().join("deps/sub");
        fs::create_dir_all(&deps).unwrap();
        fs::write(deps.join("tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(deps.join("tool"), fs::Permissions::from_mode(0o751)).unwrap();
        let old = UNIX_EPOCH + Duration::from_secs(1_500_000_000);
        File::options()
            .write(true)
            .open(deps.join("tool"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::os::unix::fs::symlink("tool", deps.join("link")).unwrap();
        fs::write(src.path().join("not-cached"), b"x").unwrap();
        let p = paths(src.path(), &["deps/**/*"]);
        let mut data = Vec::new();
        let mut notes = Vec::new();
        let stats = pack(&p, &mut data, &mut |n| notes.push(n)).unwrap();
        assert_eq!(
            stats,
            Stats {
                files: 2,
                bytes: 10
            }
        );
        assert!(notes.is_empty(), "{notes:?}");

        let dst = tempfile::tempdir().unwrap();
        let q = paths(dst.path(), &["deps/**/*"]);
        assert_eq!(restore(&q, &data).unwrap(), stats);
        let tool = dst.path().join("deps/sub/tool");
        let meta = fs::metadata(&tool).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o751);
        assert_eq!(meta.modified().unwrap(), old);
        assert_eq!(fs::read(&tool).unwrap(), b"#!/bin/sh\n");
        let link = dst.path().join("deps/sub/link");
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("tool"));
        assert_eq!(
            listing(dst.path()),
            ["deps", "deps/sub", "deps/sub/link", "deps/sub/tool"]
        );
        // Restoring again replaces files and links instead of failing or writing through them.
        assert_eq!(restore(&q, &data).unwrap(), stats);
    }

    #[test]
    fn absolute_paths_use_their_own_anchor() {
        let src = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        fs::create_dir_all(home.path().join(".m2")).unwrap();
        fs::write(home.path().join(".m2/a.jar"), b"jar").unwrap();
        let pattern = format!("{}/.m2/**/*", home.path().display());
        let p = paths(src.path(), &[&pattern]);
        let mut data = Vec::new();
        pack(&p, &mut data, &mut |_| {}).unwrap();
        fs::remove_dir_all(home.path().join(".m2")).unwrap();
        assert_eq!(restore(&p, &data).unwrap().files, 1);
        assert_eq!(fs::read(home.path().join(".m2/a.jar")).unwrap(), b"jar");
        assert!(listing(src.path()).is_empty());
    }

    /// `verify` rejects `data` for `what` and writes nothing under `dir`; `unpack` alone (which
    /// may restore the members before the bad one) rejects it too.
    fn rejected(p: &CachePaths, data: &[u8], dir: &Path, what: &str) {
        let err = verify(p, data).unwrap_err();
        assert!(err.to_string().contains(what), "{err}");
        assert!(listing(dir).is_empty(), "{:?}", listing(dir));
        assert!(unpack(p, data).is_err());
    }

    #[test]
    fn dot_dot_and_absolute_entries_are_rejected() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        fs::create_dir(&src).unwrap();
        let p = paths(&src, &["**/*"]);
        for (name, what) in [
            ("src/../evil", "unsafe entry name"),
            ("src/a/../../evil", "unsafe entry name"),
            ("/evil", "absolute entry name"),
            ("abs/evil", "outside the cached paths"),
            ("evil", "without an anchor"),
        ] {
            let data = archive(&[(name, None, b"x")]);
            rejected(&p, &data, root.path().join("src").as_path(), what);
        }
        assert_eq!(listing(root.path()), ["src"]);
    }

    #[test]
    fn entries_outside_the_cached_paths_are_rejected() {
        let src = tempfile::tempdir().unwrap();
        let p = paths(src.path(), &["deps/**/*"]);
        let data = archive(&[("src/deps/a", None, b"x"), ("src/other", None, b"x")]);
        rejected(&p, &data, src.path(), "outside the cached paths");
        assert!(!src.path().join("other").exists());
    }

    #[test]
    fn a_link_planted_in_the_archive_is_never_written_through() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        let outside = root.path().join("outside");
        fs::create_dir(&src).unwrap();
        fs::create_dir(&outside).unwrap();
        let p = paths(&src, &["deps/**/*"]);
        let data = archive(&[
            ("src/deps/link", Some(outside.to_str().unwrap()), b""),
            ("src/deps/link/evil", None, b"x"),
        ]);
        rejected(&p, &data, &src, "goes through a link");
        assert!(listing(&outside).is_empty());
    }

    #[test]
    fn a_link_already_on_disk_is_never_written_through() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        let outside = root.path().join("outside");
        fs::create_dir_all(&src).unwrap();
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, src.join("deps")).unwrap();
        let p = paths(&src, &["deps/**/*"]);
        let data = archive(&[("src/deps/evil", None, b"x")]);
        rejected(&p, &data, &outside, "not a directory");
        assert!(listing(&outside).is_empty());

        // A link in the final place is replaced, not followed.
        fs::remove_file(src.join("deps")).unwrap();
        fs::create_dir(src.join("deps")).unwrap();
        std::os::unix::fs::symlink(outside.join("target"), src.join("deps/file")).unwrap();
        let data = archive(&[("src/deps/file", None, b"new")]);
        restore(&p, &data).unwrap();
        assert!(listing(&outside).is_empty());
        assert_eq!(fs::read(src.join("deps/file")).unwrap(), b"new");
    }

    #[test]
    fn a_truncated_entry_fails_before_anything_is_written() {
        let src = tempfile::tempdir().unwrap();
        let p = paths(src.path(), &["**/*"]);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let data = archive(&[("src/a", None, b"first"), ("src/b", None, &big)]);
        for len in [0, 10, data.len() / 2, data.len() - 1] {
            assert!(verify(&p, &data[..len]).is_err(), "length {len}");
        }
        assert!(listing(src.path()).is_empty());
        assert_eq!(restore(&p, &data).unwrap().files, 2);
    }

    #[test]
    fn hard_links_and_devices_are_rejected() {
        let src = tempfile::tempdir().unwrap();
        let p = paths(src.path(), &["**/*"]);
        let mut out = Vec::new();
        {
            let mut encoder = zstd::Encoder::new(&mut out, 1).unwrap();
            {
                let mut tar = tar::Builder::new(&mut encoder);
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                tar.append_link(&mut header, "src/h", "/etc/passwd")
                    .unwrap();
                tar.finish().unwrap();
            }
            encoder.finish().unwrap();
        }
        rejected(&p, &out, src.path(), "unsupported type");
        assert!(listing(src.path()).is_empty());
    }
}
