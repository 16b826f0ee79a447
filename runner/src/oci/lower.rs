//! What the layers below a new one hold: a [`Lower`] view of the base image's file system, built
//! from the tar headers of its layers, so that a new layer fits on top of it as Docker's would.
//!
//! Docker (BuildKit without `--link`, the classic builder) copies into the base's unpacked file
//! system and takes the difference: a directory the copy passes through keeps the base's mode and
//! owner (containerd's diff writes parents with their real metadata), a link on the way is
//! followed, and a file copied onto an existing directory goes into it. A layer written from
//! files alone must look the base's directories up to do the same; otherwise `COPY f /tmp/f`
//! would write `/tmp` as `0755` and reset the base's `1777` when the layer is applied.
//!
//! The headers of each layer are read once and kept beside the blobs
//! (`ROOT/index/<diff id hex>.json`); layers this engine writes record theirs as they are
//! written. Whiteouts (`.wh.NAME`, `.wh..wh..opq`) of the lower layers are applied in order.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::Digest;
use super::store::Store;
use super::OciError;

/// What a path is in a lower layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LowerKind {
    /// A directory.
    Dir,
    /// A symbolic link to the target.
    Symlink(String),
    /// Anything else (a file, a hard link, a device).
    Other,
}

/// One path of a lower layer, as its tar header gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowerEntry {
    /// The path, relative to `/`, without a trailing `/`.
    pub path: String,
    /// What it is.
    pub kind: LowerKind,
    /// Permission bits (with setuid, setgid and sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The merged file system of the layers below a new one (paths relative to `/`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lower {
    entries: BTreeMap<String, LowerEntry>,
}

/// How many links a path may pass through before it is taken as a loop (Linux's limit).
const MAX_LINKS: usize = 40;

impl Lower {
    /// Nothing below (`FROM scratch`).
    pub fn empty() -> Lower {
        Lower::default()
    }

    /// The entry at `path` (relative to `/`, normalized), not following a final link.
    pub fn get(&self, path: &str) -> Option<&LowerEntry> {
        self.entries.get(path)
    }

    /// Applies one layer's entries on top (whiteouts remove, an opaque directory hides what the
    /// layers below had in it, a non-directory replaces a directory and all below it).
    pub fn apply(&mut self, layer: Vec<LowerEntry>) {
        let mut added = Vec::with_capacity(layer.len());
        for entry in layer {
            let (dir, name) = match entry.path.rsplit_once('/') {
                Some((d, n)) => (d, n),
                None => ("", entry.path.as_str()),
            };
            if name == ".wh..wh..opq" {
                self.remove_below(dir);
            } else if let Some(hidden) = name.strip_prefix(".wh.") {
                let hidden = if dir.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{dir}/{hidden}")
                };
                self.entries.remove(&hidden);
                self.remove_below(&hidden);
            } else {
                added.push(entry);
            }
        }
        for entry in added {
            if entry.kind != LowerKind::Dir {
                self.remove_below(&entry.path);
            }
            self.entries.insert(entry.path.clone(), entry);
        }
    }

    fn remove_below(&mut self, dir: &str) {
        let below = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let doomed: Vec<String> = self
            .entries
            .range(below.clone()..)
            .take_while(|(p, _)| p.starts_with(&below))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.entries.remove(&p);
        }
    }

    /// `path` (relative to `/`, normalized) with every link among its parents followed inside
    /// the image's root, as a copy into the unpacked file system would resolve it; the last
    /// component is kept as it is. A link that leaves the root stays at the root (`..` of `/` is
    /// `/`); a loop leaves the rest of the path unresolved.
    pub fn resolve_parents(&self, path: &str) -> String {
        self.resolve(path, false)
    }

    /// [`Lower::resolve_parents`], and the last component too when it is a link to a directory
    /// (where a directory goes: `COPY dir/ /bin/` fills what `/bin` points to).
    pub fn resolve_dir(&self, path: &str) -> String {
        if self.is_dir(path) {
            self.resolve(path, true)
        } else {
            self.resolve(path, false)
        }
    }

    fn resolve(&self, path: &str, follow_last: bool) -> String {
        let mut pending: Vec<String> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .rev()
            .map(str::to_string)
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if pending.is_empty() && !follow_last && part != ".." && part != "." {
                done.push(part);
                break;
            }
            match part.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(part);
            let here = done.join("/");
            if let Some(LowerEntry {
                kind: LowerKind::Symlink(target),
                ..
            }) = self.entries.get(&here)
            {
                hops += 1;
                if hops > MAX_LINKS {
                    continue;
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|p| !p.is_empty())
                        .rev()
                        .map(str::to_string),
                );
            }
        }
        done.join("/")
    }

    /// Whether `path` is a directory below, following links (also the last one).
    pub fn is_dir(&self, path: &str) -> bool {
        let mut path = self.resolve_parents(path);
        for _ in 0..MAX_LINKS {
            match self.entries.get(&path).map(|e| &e.kind) {
                Some(LowerKind::Dir) => return true,
                Some(LowerKind::Symlink(target)) => {
                    let joined = if target.starts_with('/') {
                        target.clone()
                    } else {
                        let parent = path.rsplit_once('/').map_or("", |(d, _)| d);
                        format!("{parent}/{target}")
                    };
                    path = self.resolve_parents(&format!("{joined}/x"));
                    path = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
                    if path.is_empty() {
                        return true; // the root
                    }
                }
                _ => return false,
            }
        }
        false
    }
}

/// The entries of the layer `diff_id` (whose blob is `blob`, compressed as `media_type` says),
/// from the store's index, else read from the blob's tar headers and indexed.
pub fn layer_entries(
    store: &Store,
    diff_id: &Digest,
    blob: &Path,
    media_type: &str,
) -> Result<Vec<LowerEntry>, OciError> {
    let index = index_path(store, diff_id);
    if let Ok(bytes) = fs::read(&index) {
        // A damaged index is read again from the blob.
        if let Ok(entries) = serde_json::from_slice(&bytes) {
            return Ok(entries);
        }
    }
    let entries = read_headers(blob, media_type)?;
    save_index(store, diff_id, &entries)?;
    Ok(entries)
}

fn index_path(store: &Store, diff_id: &Digest) -> PathBuf {
    store
        .root()
        .join("index")
        .join(format!("{}.json", diff_id.hex()))
}

/// Records the entries of the layer `diff_id` (atomically: a temporary file renamed).
pub fn save_index(store: &Store, diff_id: &Digest, entries: &[LowerEntry]) -> Result<(), OciError> {
    let path = index_path(store, diff_id);
    let dir = store.root().join("index");
    fs::create_dir_all(&dir).map_err(|e| OciError::io("create", &dir, e))?;
    let bytes = serde_json::to_vec(entries)
        .map_err(|e| OciError::Invalid(format!("cannot encode a layer index: {e}")))?;
    let mut temp = store.temp()?;
    temp.write_all(&bytes)
        .map_err(|e| OciError::io("write", temp.path(), e))?;
    temp.persist(&path)
        .map_err(|e| OciError::io("write", &path, e.error))?;
    Ok(())
}

/// The entries of a layer blob, from its tar headers (the data is read through, not kept).
fn read_headers(blob: &Path, media_type: &str) -> Result<Vec<LowerEntry>, OciError> {
    let bad = |e: io::Error| {
        OciError::io(
            "read the layer",
            blob,
            io::Error::new(e.kind(), format!("{e} (is the blob a {media_type}?)")),
        )
    };
    let mut file = File::open(blob).map_err(bad)?;
    let mut magic = [0u8; 4];
    let n = (&mut file).take(4).read(&mut magic).map_err(bad)?;
    file.seek(io::SeekFrom::Start(0)).map_err(bad)?;
    let file = BufReader::with_capacity(1 << 20, file);
    // The bytes decide, not the media type: Docker schema 2 calls every layer `tar.gzip`.
    let reader: Box<dyn Read> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::with_buffer(file).map_err(bad)?)
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let header = entry.header();
        let path = entry.path().map_err(bad)?;
        let path = super::layer::normalize(&path.to_string_lossy())?;
        if path.is_empty() {
            continue;
        }
        let kind = match header.entry_type() {
            tar::EntryType::Directory => LowerKind::Dir,
            tar::EntryType::Symlink => LowerKind::Symlink(
                entry
                    .link_name()
                    .map_err(bad)?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => LowerKind::Other,
        };
        out.push(LowerEntry {
            path,
            kind,
            mode: header.mode().map_err(bad)? & 0o7777,
            uid: header.uid().map_err(bad)?.try_into().unwrap_or(u32::MAX),
            gid: header.gid().map_err(bad)?.try_into().unwrap_or(u32::MAX),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, kind: LowerKind, mode: u32) -> LowerEntry {
        LowerEntry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_what_is_below() {
        let mut lower = Lower::empty();
        lower.apply(vec![
            e("a", LowerKind::Dir, 0o755),
            e("a/x", LowerKind::Other, 0o644),
            e("b", LowerKind::Dir, 0o700),
            e("b/y", LowerKind::Other, 0o644),
            e("c", LowerKind::Dir, 0o755),
            e("c/z", LowerKind::Other, 0o644),
        ]);
        lower.apply(vec![
            e("a/.wh.x", LowerKind::Other, 0),
            e("b/.wh..wh..opq", LowerKind::Other, 0),
            e("b/new", LowerKind::Other, 0o644),
            e("c", LowerKind::Other, 0o644),
        ]);
        assert!(lower.get("a").is_some() && lower.get("a/x").is_none());
        assert!(lower.get("b/y").is_none() && lower.get("b/new").is_some());
        assert_eq!(lower.get("c").unwrap().kind, LowerKind::Other);
        assert!(lower.get("c/z").is_none());
    }

    #[test]
    fn links_among_the_parents_are_followed_inside_the_root() {
        let mut lower = Lower::empty();
        lower.apply(vec![
            e("bin", LowerKind::Symlink("usr/bin".into()), 0o777),
            e("usr", LowerKind::Dir, 0o755),
            e("usr/bin", LowerKind::Dir, 0o755),
            e("var", LowerKind::Dir, 0o755),
            e("var/run", LowerKind::Symlink("/run".into()), 0o777),
            e("up", LowerKind::Symlink("../../..".into()), 0o777),
            e("loop", LowerKind::Symlink("loop".into()), 0o777),
            e("tmp", LowerKind::Dir, 0o1777),
        ]);
        assert_eq!(lower.resolve_parents("bin/tool"), "usr/bin/tool");
        assert_eq!(lower.resolve_parents("bin"), "bin");
        assert_eq!(lower.resolve_parents("var/run/x.pid"), "run/x.pid");
        assert_eq!(lower.resolve_parents("up/etc/f"), "etc/f");
        assert_eq!(lower.resolve_parents("loop/f"), "loop/f");
        assert!(lower.is_dir("bin") && lower.is_dir("tmp") && !lower.is_dir("nope"));
    }
}
