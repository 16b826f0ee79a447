//! Packing cached paths into an entry and restoring them, with the checks of the module docs.
//!
//! An entry is a tar stream (GNU headers, members sorted by name, segment by segment) cut into
//! frames of 4 MiB, each compressed with zstd on a pool of threads and preceded by an index
//! frame that holds a compressed copy of the frame's tar headers (the `frames` module has the
//! layout).
//!
//! A restore is two passes over the entry, [`verify`] then [`unpack`]:
//!
//! * `verify` reads every frame and checks its CRC-32, but decompresses only the header copies:
//!   it sees every member without decompressing any file, and checks every member's name, type
//!   and order and the disk where it would go.
//! * `unpack` decompresses the frames on a pool of threads, in order; the calling thread walks
//!   the tar stream (checking each header against the copy `verify` saw), creates directories
//!   (each opened with `O_NOFOLLOW`, files created relative to it, so nothing is written
//!   through a link), creates links, writes the files that span frames itself and hands every
//!   other file (a slice of its decoded frame, not a copy) to a pool of writer threads that
//!   create, fill, `chmod` and date it.
//!
//! Pools have one thread per core, at most 6. Memory is bounded whatever the entry's size: a
//! pack holds at most `threads + 4` frames (being filled, compressed or written out), a restore
//! at most `threads + 6` decoded frames (in flight, waiting to be read, or held by pending
//! writes) and `threads + 3` compressed ones; about 60 MiB on two cores.

mod disk;
mod frames;
mod tarball;

use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use globset::{GlobSet, GlobSetBuilder};

use crate::artifacts::collect::{glob, normalize, walk_roots};
use disk::{Dirs, DiskCheck, WriteJob, Writers};
use frames::{FrameWriter, Layout, LAYOUT};
use tarball::{padding, Kind, Member, Stream};

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
        // In name order, the order of the members.
        for (name, root, patterns) in [
            ("abs", PathBuf::from("/"), abs),
            ("src", source_dir.to_path_buf(), src),
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

/// Compares two member names segment by segment (the order of a sorted walk).
fn compare(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Packs the files of `paths` into `out` as one tar + zstd stream; `notes` gets warnings about
/// files that cannot be cached.
pub fn pack(
    paths: &CachePaths,
    out: impl Write,
    notes: &mut dyn FnMut(String),
) -> io::Result<Stats> {
    pack_with(paths, out, notes, LAYOUT)
}

fn pack_with(
    paths: &CachePaths,
    out: impl Write,
    notes: &mut dyn FnMut(String),
    layout: Layout,
) -> io::Result<Stats> {
    frames::write(out, layout, |frames| {
        let mut stats = Stats::default();
        for anchor in &paths.anchors {
            let patterns: Vec<&str> = anchor.patterns.iter().map(String::as_str).collect();
            let mut roots = walk_roots(&anchor.root, &patterns);
            // Segment order, so that members come sorted (`a/b` before `a-b`).
            roots.sort_by(|a, b| a.components().cmp(b.components()));
            for walk_root in roots {
                pack_walk(paths, anchor, &walk_root, frames, &mut stats, notes)?;
            }
        }
        frames.header(&[0u8; 1024])?;
        Ok(stats)
    })
}

fn pack_walk<W: Write>(
    paths: &CachePaths,
    anchor: &Anchor,
    walk_root: &Path,
    frames: &mut FrameWriter<W>,
    stats: &mut Stats,
    notes: &mut dyn FnMut(String),
) -> io::Result<()> {
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
        let mode = meta.permissions().mode() & 0o7777;
        if file_type.is_symlink() {
            let target = std::fs::read_link(path)?;
            let kind = Kind::Link(target.into_os_string().into_encoded_bytes());
            frames.header(&tarball::header(&name, &kind, mode, mtime, 0))?;
        } else if file_type.is_file() {
            let mut file = match File::open(path) {
                Ok(file) => file,
                Err(e) => {
                    notes(format!("Skipping {}: {e}", path.display()));
                    continue;
                }
            };
            let size = meta.len();
            frames.header(&tarball::header(&name, &Kind::File, mode, mtime, size))?;
            // A file that changes size while it is read fails the save, never the archive.
            frames
                .file(&mut file, size, padding(size))
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            stats.bytes += size;
        } else {
            notes(format!("Skipping {}: not a regular file", path.display()));
            continue;
        }
        stats.files += 1;
    }
    Ok(())
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

/// The members' order: strictly increasing, compared segment by segment, as [`pack`] writes
/// them. So a name appears once, and a member below a file or link (`a/b` after the file or
/// link `a`) comes right after it, where it is refused; nothing needs to be remembered but the
/// previous name.
#[derive(Default)]
struct Order {
    previous: Option<(String, bool)>,
}

impl Order {
    fn check(&mut self, name: &str, link: bool) -> io::Result<()> {
        if let Some((previous, was_link)) = &self.previous {
            let below = name.len() > previous.len()
                && name.starts_with(previous.as_str())
                && name.as_bytes()[previous.len()] == b'/';
            if below && *was_link {
                return Err(invalid(format!(
                    "entry {name} goes through a link stored in the archive ({previous})"
                )));
            }
            if below {
                return Err(invalid(format!(
                    "entry {name} needs {previous} to be a directory, but the archive stores a file there"
                )));
            }
            match compare(previous, name) {
                Ordering::Less => {}
                Ordering::Equal => return Err(invalid(format!("entry {name} appears twice"))),
                Ordering::Greater => {
                    return Err(invalid(format!(
                        "entry {name} comes after {previous}: the entry is not sorted"
                    )))
                }
            }
        }
        self.previous = Some((name.to_string(), link));
        Ok(())
    }
}

/// Checks a member's name, order and type; returns its anchor and path below it.
fn check_member<'a>(
    paths: &'a CachePaths,
    order: &mut Order,
    member: &Member,
) -> io::Result<(&'a Anchor, String)> {
    let (anchor, rest) = self::member(paths, &member.name)?;
    let name = format!("{}/{rest}", anchor.name);
    if let Kind::Other(other) = member.kind {
        return Err(invalid(format!(
            "entry {name} has an unsupported type ({other:?})"
        )));
    }
    order.check(&name, matches!(member.kind, Kind::Link(_)))?;
    Ok((anchor, rest))
}

/// Reads a whole entry without writing anything, and fails unless it is complete and intact (the
/// CRC-32 of every frame; for an entry without an index, the zstd checksum) and every member
/// passes the checks of the module docs against `paths` and the disk: members sorted, each name
/// once, nothing below a file or link of the entry; where a member goes, no directory on the
/// way may be a file or a link, and the place itself may not be a directory. Only the tar headers
/// are decompressed (from the index), not the files.
pub fn verify(paths: &CachePaths, input: impl Read) -> io::Result<Stats> {
    frames::read(input, true, |pieces| {
        let mut stream = Stream::new(pieces);
        let mut order = Order::default();
        let mut disk = DiskCheck::default();
        let mut stats = Stats::default();
        while let Some(member) = stream.next_member()? {
            let (anchor, rest) = check_member(paths, &mut order, &member)?;
            disk.check(anchor.name, &anchor.root, &rest)?;
            if let Kind::File = member.kind {
                stats.bytes += member.size;
            }
            stats.files += 1;
            stream.skip(member.size + padding(member.size) as u64)?;
        }
        Ok(stats)
    })
}

/// Restores an entry that [`verify`] accepted, checking every member again (and that its header
/// is the one `verify` saw); never follows a link, replaces an existing file or link rather than
/// writing through it, and never removes a directory. Files are written by a pool of threads (see
/// the module docs), so after a failure, members after the bad one may have been written too.
pub fn unpack(paths: &CachePaths, input: impl Read) -> io::Result<Stats> {
    frames::read(input, false, |pieces| {
        std::thread::scope(|scope| {
            let writers = Writers::start(scope, frames::workers())?;
            let unpacked = unpack_members(paths, pieces, &writers);
            let written = writers.finish();
            let stats = unpacked?;
            written?;
            Ok(stats)
        })
    })
}

fn unpack_members(
    paths: &CachePaths,
    pieces: &mut dyn frames::Pieces,
    writers: &Writers<'_>,
) -> io::Result<Stats> {
    let mut stream = Stream::new(pieces);
    let mut order = Order::default();
    let mut dirs = Dirs::default();
    let mut stats = Stats::default();
    // Numbers the directories as the walk enters them, for the writer threads.
    let mut previous: Option<Arc<OwnedFd>> = None;
    let mut dir_number = 0u64;
    while let Some(member) = stream.next_member()? {
        let (anchor, rest) = check_member(paths, &mut order, &member)?;
        let segments: Vec<&str> = rest.split('/').collect();
        let (name, parents) = segments.split_last().expect("split gives one item");
        let dir = dirs.get(anchor.name, &anchor.root, parents)?;
        if !previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, &dir)) {
            dir_number += 1;
            previous = Some(Arc::clone(&dir));
        }
        let shown = || anchor.root.join(&rest);
        match &member.kind {
            Kind::File => {
                let size = member.size;
                let slice = match usize::try_from(size) {
                    Ok(0) => Some(None),
                    Ok(n) => stream.slice(n)?.map(Some),
                    Err(_) => None,
                };
                match slice {
                    Some(data) => writers.send(
                        dir_number,
                        WriteJob {
                            dir,
                            name: name.to_string(),
                            shown: shown(),
                            data,
                            mode: member.mode,
                            mtime: member.mtime,
                        },
                    )?,
                    None => {
                        // Spans frames: written here, frame by frame.
                        let mut file = disk::create_file(&dir, name, &shown)?;
                        stream.copy_to(size, &mut file).map_err(|e| {
                            io::Error::new(e.kind(), format!("{}: {e}", shown().display()))
                        })?;
                        disk::finish_file(&file, member.mode, member.mtime)?;
                    }
                }
                stream.skip(padding(size) as u64)?;
                stats.bytes += size;
            }
            Kind::Link(target) => {
                disk::create_link(&dir, name, target, member.mtime, &shown)?;
                stream.skip(member.size + padding(member.size) as u64)?;
            }
            Kind::Other(_) => unreachable!("refused by check_member"),
        }
        stats.files += 1;
        writers.check()?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Duration;

    fn paths(src: &Path, list: &[&str]) -> CachePaths {
        CachePaths::new(src, list).unwrap()
    }

    /// A member of a hand-made archive: name, link target (a link) or none (a file), data.
    type Spec<'a> = (&'a str, Option<&'a str>, &'a [u8]);

    /// The tar bytes of `member`: its header (raw name: `Header::set_path` refuses `..`, a
    /// hostile archive does not) and its data with the padding.
    fn tar_member((name, link, data): &Spec<'_>) -> (Vec<u8>, Vec<u8>) {
        let kind = match link {
            Some(target) => Kind::Link(target.as_bytes().to_vec()),
            None => Kind::File,
        };
        let size = if link.is_some() { 0 } else { data.len() as u64 };
        let header = tarball::header(name, &kind, 0o644, 1_000_000, size);
        let mut body = data.to_vec();
        body.resize(data.len() + padding(data.len() as u64), 0);
        (header, body)
    }

    /// A plain tar + zstd stream of `tar` (an entry without an index, read serially).
    fn plain(tar: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = zstd::Encoder::new(&mut out, 1).unwrap();
        encoder.include_checksum(true).unwrap();
        encoder.write_all(tar).unwrap();
        encoder.finish().unwrap();
        out
    }

    /// An entry with the given members in both encodings: plain, and indexed in small frames.
    fn archives(members: &[Spec<'_>]) -> [Vec<u8>; 2] {
        let mut tar = Vec::new();
        for member in members {
            let (header, body) = tar_member(member);
            tar.extend(header);
            tar.extend(body);
        }
        tar.extend([0u8; 1024]);
        let mut indexed = Vec::new();
        frames::write(&mut indexed, Layout { frame: 700 }, |frames| {
            for member in members {
                let (header, body) = tar_member(member);
                frames.header(&header)?;
                let len = member.2.len() as u64;
                frames.file(&mut &body[..], len, padding(len))?;
            }
            frames.header(&[0u8; 1024])
        })
        .unwrap();
        [plain(&tar), indexed]
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

    /// Every file and link under `dir` with what a restore must keep: mode, time and content,
    /// or link target.
    fn snapshot(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
            let e = e.unwrap();
            let name = e.path().strip_prefix(dir).unwrap().display().to_string();
            let meta = e.path().symlink_metadata().unwrap();
            // Entries keep whole seconds.
            let mtime = meta
                .modified()
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            if meta.file_type().is_symlink() {
                let target = fs::read_link(e.path()).unwrap();
                out.push(format!("{name} -> {} {mtime}", target.display()));
            } else if meta.is_file() {
                let data = fs::read(e.path()).unwrap();
                out.push(format!(
                    "{name} {:o} {mtime} {} {:08x}",
                    meta.permissions().mode() & 0o7777,
                    data.len(),
                    crc32fast::hash(&data)
                ));
            }
        }
        out
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

    /// A tree with every kind of member a restore handles differently: empty, small (written
    /// by the pool), spanning frames (written by the calling thread), long names and link
    /// targets (GNU long-name entries), links to files and directories, modes and times.
    fn varied_tree(root: &Path) {
        let long_dir =
            "a-directory-name-long-enough-that-the-path-needs-more-than-one-hundred-bytes";
        for i in 0..120u32 {
            let dir = root.join(format!(
                "deps/pkg{}/{}",
                i % 7,
                if i % 3 == 0 { long_dir } else { "lib" }
            ));
            fs::create_dir_all(&dir).unwrap();
            let size = [0, 1, 511, 512, 513, 3000, 9000, 70_000][i as usize % 8];
            let data: Vec<u8> = (0..size)
                .map(|j| (j * 31 + i * 7) as u8 % 61 + 32)
                .collect();
            let file = dir.join(format!("file-{i}-{}.js", "x".repeat(i as usize % 40)));
            fs::write(&file, data).unwrap();
            let mode = [0o644, 0o755, 0o600, 0o444][i as usize % 4];
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
            let time = UNIX_EPOCH + Duration::from_secs(1_400_000_000 + u64::from(i) * 3_601);
            File::options()
                .write(true)
                .open(&file)
                .unwrap()
                .set_modified(time)
                .unwrap();
        }
        let bin = root.join("deps/.bin");
        fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink("../pkg1/lib", bin.join("dir-link")).unwrap();
        std::os::unix::fs::symlink(
            format!("../pkg0/{long_dir}/file-0-.js"),
            bin.join("long-link"),
        )
        .unwrap();
        std::os::unix::fs::symlink("missing", bin.join("dangling")).unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|j| (j % 253) as u8).collect();
        fs::write(root.join("deps/big.bin"), big).unwrap();
    }

    #[test]
    fn a_parallel_restore_writes_what_was_packed() {
        let src = tempfile::tempdir().unwrap();
        varied_tree(src.path());
        let p = paths(src.path(), &["deps/**/*"]);
        let expected = snapshot(src.path());
        assert_eq!(expected.len(), 124);
        for layout in [LAYOUT, Layout { frame: 4096 }] {
            let mut data = Vec::new();
            let stats = pack_with(&p, &mut data, &mut |n| panic!("{n}"), layout).unwrap();
            assert_eq!(stats.files, 124);

            let dst = tempfile::tempdir().unwrap();
            let q = paths(dst.path(), &["deps/**/*"]);
            assert_eq!(restore(&q, &data).unwrap(), stats);
            assert_eq!(snapshot(dst.path()), expected);

            // Any zstd decoder skips the index frames: the same tree as a plain tar + zstd
            // stream (read serially) restores the same, and the tar crate reads it.
            let tar = zstd::decode_all(&data[..]).unwrap();
            let members = tar::Archive::new(&tar[..]).entries().unwrap().count();
            assert_eq!(members, 124);
            let dst = tempfile::tempdir().unwrap();
            let q = paths(dst.path(), &["deps/**/*"]);
            assert_eq!(restore(&q, &plain(&tar)).unwrap(), stats);
            assert_eq!(snapshot(dst.path()), expected);
        }
    }

    #[test]
    fn members_are_sorted_across_anchors_and_roots() {
        let src = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        for dir in ["a/c", "a-b"] {
            fs::create_dir_all(src.path().join(dir)).unwrap();
            fs::write(src.path().join(dir).join("f"), dir).unwrap();
        }
        fs::create_dir_all(home.path().join(".m2")).unwrap();
        fs::write(home.path().join(".m2/a.jar"), b"jar").unwrap();
        let m2 = format!("{}/.m2/**/*", home.path().display());
        // `a-b` sorts before `a/c` as a string, after it segment by segment.
        let p = paths(src.path(), &["a-b/**/*", "a/c/**/*", &m2]);
        let mut data = Vec::new();
        pack(&p, &mut data, &mut |n| panic!("{n}")).unwrap();
        let expected = (snapshot(src.path()), snapshot(home.path()));
        fs::remove_dir_all(home.path().join(".m2")).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let q = paths(dst.path(), &["a-b/**/*", "a/c/**/*", &m2]);
        assert_eq!(restore(&q, &data).unwrap().files, 3);
        assert_eq!((snapshot(dst.path()), snapshot(home.path())), expected);
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
        let before = listing(dir);
        let err = verify(p, data).unwrap_err();
        assert!(err.to_string().contains(what), "{err}");
        assert_eq!(listing(dir), before);
        assert!(unpack(p, data).is_err());
    }

    /// [`rejected`] for an archive of `members`, in both encodings.
    fn refused(p: &CachePaths, members: &[Spec<'_>], dir: &Path, what: &str) {
        for data in archives(members) {
            rejected(p, &data, dir, what);
        }
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
            refused(&p, &[(name, None, b"x")], &src, what);
        }
        assert_eq!(listing(root.path()), ["src"]);
    }

    #[test]
    fn entries_outside_the_cached_paths_are_rejected() {
        let src = tempfile::tempdir().unwrap();
        let p = paths(src.path(), &["deps/**/*"]);
        let members: &[Spec<'_>] = &[("src/deps/a", None, b"x"), ("src/other", None, b"x")];
        refused(&p, members, src.path(), "outside the cached paths");
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
        let members: &[Spec<'_>] = &[
            ("src/deps/link", Some(outside.to_str().unwrap()), b""),
            ("src/deps/link/evil", None, b"x"),
        ];
        refused(&p, members, &src, "goes through a link");
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
        refused(
            &p,
            &[("src/deps/evil", None, b"x")],
            &outside,
            "not a directory",
        );
        assert!(listing(&outside).is_empty());

        // A link in the final place is replaced, not followed.
        fs::remove_file(src.join("deps")).unwrap();
        fs::create_dir(src.join("deps")).unwrap();
        for data in archives(&[("src/deps/file", None, b"new")]) {
            let _ = fs::remove_file(src.join("deps/file"));
            std::os::unix::fs::symlink(outside.join("target"), src.join("deps/file")).unwrap();
            restore(&p, &data).unwrap();
            assert!(listing(&outside).is_empty());
            assert_eq!(fs::read(src.join("deps/file")).unwrap(), b"new");
        }
    }

    #[test]
    fn a_name_twice_or_out_of_order_is_rejected() {
        let twice: &[Spec<'_>] = &[
            ("src/a", None, b"1"),
            ("src/b", None, b"2"),
            ("src/b", None, b"3"),
        ];
        let unsorted: &[Spec<'_>] = &[("src/b", None, b"1"), ("src/a", None, b"2")];
        // `a/b` then the file `a`: a file where a directory was made.
        let file_after_dir: &[Spec<'_>] = &[("src/a/b", None, b"1"), ("src/a", None, b"2")];
        // The file `a` then `a/b`: a directory needed where a file was written.
        let dir_after_file: &[Spec<'_>] = &[
            ("src/0", None, b"0"),
            ("src/a", None, b"1"),
            ("src/a/b", None, b"2"),
        ];
        for (members, what) in [
            (twice, "appears twice"),
            (unsorted, "not sorted"),
            (file_after_dir, "not sorted"),
            (dir_after_file, "needs src/a to be a directory"),
        ] {
            for data in archives(members) {
                let src = tempfile::tempdir().unwrap();
                let p = paths(src.path(), &["**/*"]);
                rejected(&p, &data, src.path(), what);
            }
        }
    }

    #[test]
    fn a_directory_on_disk_where_the_entry_has_a_file_refuses_the_whole_entry() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("deps/x")).unwrap();
        fs::write(src.path().join("deps/x/kept"), b"kept").unwrap();
        let p = paths(src.path(), &["deps/**/*"]);
        let file: &[Spec<'_>] = &[
            ("src/deps/a", None, b"a"),
            ("src/deps/x", None, b"x"),
            ("src/deps/z", None, b"z"),
        ];
        // A link where a directory is on disk, too.
        let link: &[Spec<'_>] = &[("src/deps/a", None, b"a"), ("src/deps/x", Some("a"), b"")];
        for members in [file, link] {
            for data in archives(members) {
                // (`unpack` alone, in `rejected`, may write the other members.)
                let _ = fs::remove_file(src.path().join("deps/a"));
                let _ = fs::remove_file(src.path().join("deps/z"));
                rejected(&p, &data, src.path(), "is a directory on disk");
                // Even `unpack` alone never removes a directory.
                assert_eq!(fs::read(src.path().join("deps/x/kept")).unwrap(), b"kept");
            }
        }
    }

    #[test]
    fn a_file_on_disk_where_the_entry_needs_a_directory_refuses_the_whole_entry() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("deps")).unwrap();
        fs::write(src.path().join("deps/y"), b"a file").unwrap();
        let p = paths(src.path(), &["deps/**/*"]);
        let members: &[Spec<'_>] = &[("src/deps/a", None, b"a"), ("src/deps/y/sub/z", None, b"z")];
        for data in archives(members) {
            let _ = fs::remove_file(src.path().join("deps/a"));
            rejected(&p, &data, src.path(), "not a directory");
            assert_eq!(fs::read(src.path().join("deps/y")).unwrap(), b"a file");
        }
    }

    #[test]
    fn a_truncated_entry_fails_before_anything_is_written() {
        let src = tempfile::tempdir().unwrap();
        let p = paths(src.path(), &["**/*"]);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for data in archives(&[("src/a", None, b"first"), ("src/b", None, &big)]) {
            for len in [0, 10, data.len() / 2, data.len() - 1] {
                assert!(verify(&p, &data[..len]).is_err(), "length {len}");
            }
            assert!(listing(src.path()).is_empty());
            assert_eq!(restore(&p, &data).unwrap().files, 2);
            fs::remove_dir_all(src.path()).unwrap();
            fs::create_dir(src.path()).unwrap();
        }
    }

    /// Where each index frame of an indexed entry starts.
    fn frame_offsets(data: &[u8]) -> Vec<usize> {
        let word = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap()) as usize;
        let mut offsets = Vec::new();
        let mut at = 0;
        while at < data.len() {
            offsets.push(at);
            let size = word(at + 4);
            at += 8 + size + word(at + 16);
        }
        offsets
    }

    #[test]
    fn a_frame_lost_or_damaged_fails_before_anything_is_written() {
        let tree = tempfile::tempdir().unwrap();
        varied_tree(tree.path());
        let p = paths(tree.path(), &["deps/**/*"]);
        let mut data = Vec::new();
        pack_with(
            &p,
            &mut data,
            &mut |n| panic!("{n}"),
            Layout { frame: 4096 },
        )
        .unwrap();
        let offsets = frame_offsets(&data);
        assert!(offsets.len() > 100, "{}", offsets.len());
        let dst = tempfile::tempdir().unwrap();
        let q = paths(dst.path(), &["deps/**/*"]);
        // Cut at a frame boundary: the end-of-archive blocks are missing.
        for &cut in &offsets[1..] {
            let err = verify(&q, &data[..cut]).unwrap_err();
            assert!(err.to_string().contains("truncated"), "{err}");
        }
        // One byte changed anywhere: in an index, a header copy or a frame.
        for at in (0..data.len()).step_by(997) {
            let mut bad = data.clone();
            bad[at] ^= 0x10;
            assert!(verify(&q, &bad[..]).is_err(), "byte {at}");
        }
        // A frame dropped from the middle.
        let mut bad = data[..offsets[10]].to_vec();
        bad.extend_from_slice(&data[offsets[11]..]);
        assert!(verify(&q, &bad[..]).is_err());
        assert!(listing(dst.path()).is_empty());
        restore(&q, &data).unwrap();
    }

    #[test]
    fn headers_that_differ_from_the_index_stop_the_restore() {
        let src = tempfile::tempdir().unwrap();
        let p = paths(src.path(), &["**/*"]);
        let (good, good_body) = tar_member(&("src/a-good", None, b"good"));
        let (bad, bad_body) = tar_member(&("src/b-evi1", None, b"evil"));
        let (header, body) = tar_member(&("src/c-next", None, b"next"));
        let entry = |forge: &dyn Fn(&mut FrameWriter<&mut Vec<u8>>) -> io::Result<()>| {
            let mut data = Vec::new();
            frames::write(&mut data, LAYOUT, |frames| {
                frames.header(&good)?;
                frames.file(&mut &good_body[..], 4, padding(4))?;
                forge(frames)?;
                frames.file(&mut &bad_body[..], 4, padding(4))?;
                frames.header(&header)?;
                frames.file(&mut &body[..], 4, padding(4))?;
                frames.header(&[0u8; 1024])
            })
            .unwrap();
            data
        };
        // A header missing from the index.
        let data = entry(&|frames| frames.forge(&bad, None));
        rejected(&p, &data, src.path(), "index does not match");
        // The index shows another name than the tar stream: `verify` sees the index only,
        // `unpack` stops at the header that differs.
        let (shown, _) = tar_member(&("src/b-evil", None, b"evil"));
        let data = entry(&|frames| frames.forge(&bad, Some(&shown)));
        assert_eq!(verify(&p, &data[..]).unwrap().files, 3);
        let err = unpack(&p, &data[..]).unwrap_err();
        assert!(err.to_string().contains("index does not match"), "{err}");
        assert!(!src.path().join("b-evi1").exists());
        assert!(!src.path().join("c-next").exists());
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
        let mut indexed = Vec::new();
        frames::write(&mut indexed, LAYOUT, |frames| {
            for kind in [
                tar::EntryType::Link,
                tar::EntryType::Char,
                tar::EntryType::Fifo,
            ] {
                frames.header(&tarball::header("src/h", &Kind::Other(kind), 0o644, 0, 0))?;
            }
            frames.header(&[0u8; 1024])
        })
        .unwrap();
        rejected(&p, &indexed, src.path(), "unsupported type");
        assert!(listing(src.path()).is_empty());
    }
}
