//! Layers: a tree of entries ([`LayerTree`]) written in one streaming pass ([`write_layer`]):
//! deterministic tar → SHA-256 of the tar (the diff id) → compressor on every core → SHA-256 and
//! size of the blob → a temporary file in the [`Store`], renamed to its digest.
//!
//! The tar is the same bytes for the same tree: entries sorted by path (byte order), every
//! parent directory present, owner 0:0 unless `--chown` said otherwise, one modification time
//! for every entry (`SOURCE_DATE_EPOCH`, else 0), no owner names, PAX headers only where ustar
//! cannot hold a value, and files that are hard links of each other stored once, the others as
//! hard links to the first in path order.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::compress::{Compression, Compressor};
use super::lower::{self, Lower, LowerEntry, LowerKind};
use super::spec::Digest;
use super::store::Store;
use super::tarwriter::{TarHeader, TarKind, TarWriter};
use super::OciError;

/// One entry of a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// What an [`Entry`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A file whose bytes are read from `source` when the layer is written.
    File {
        /// Where the bytes are.
        source: PathBuf,
        /// Its size when it was added.
        size: u64,
        /// `(device, inode)` when the file has more than one link, to keep hard links.
        inode: Option<(u64, u64)>,
    },
    /// A symbolic link.
    Symlink(String),
}

/// Ownership and permission overrides for what is added (`--chown`, `--chmod`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddOptions {
    /// `uid:gid` of every added entry (default 0:0).
    pub chown: Option<(u32, u32)>,
    /// Permission bits of every added file and directory (default: the source's).
    pub chmod: Option<u32>,
}

/// The entries of one layer, by path (relative to `/`, no trailing `/`), and what the layers
/// below it hold.
#[derive(Clone, Debug, Default)]
pub struct LayerTree {
    entries: BTreeMap<String, Entry>,
    lower: Arc<Lower>,
}

/// `dest` as a layer path: absolute, normalized, relative to `/`, no `..` above the root.
pub fn normalize(dest: &str) -> Result<String, OciError> {
    let mut parts: Vec<&str> = Vec::new();
    for part in dest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

impl LayerTree {
    /// An empty tree with nothing below it (`FROM scratch`).
    pub fn new() -> Self {
        LayerTree::default()
    }

    /// An empty tree on top of `lower`: links among the parents of what is added are followed
    /// into it, and parent directories it has keep their mode and owner (see [`super::lower`]).
    pub fn on(lower: Arc<Lower>) -> Self {
        LayerTree {
            entries: BTreeMap::new(),
            lower,
        }
    }

    /// What is below.
    pub fn lower(&self) -> &Lower {
        &self.lower
    }

    /// The entries, in the order they are written.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an entry at `path` (absolute or relative to `/`), replacing what was there (and,
    /// for a non-directory, everything below it); missing parents are added as the lower layers
    /// have them, else as `0755` root directories.
    pub fn insert(&mut self, path: &str, entry: Entry) -> Result<(), OciError> {
        let path = if entry.kind == EntryKind::Dir {
            self.lower.resolve_dir(&normalize(path)?)
        } else {
            self.lower.resolve_parents(&normalize(path)?)
        };
        if path.is_empty() {
            return Ok(()); // the root itself is never an entry
        }
        self.ensure_parents(&path);
        if entry.kind != EntryKind::Dir {
            let below = format!("{path}/");
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
        self.entries.insert(path, entry);
        Ok(())
    }

    /// Adds a directory at `path` with `mode` and owner, unless this tree has one there; a
    /// directory the lower layers have keeps their mode and owner (a copy into an existing
    /// directory leaves it as it is).
    pub fn insert_dir(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), OciError> {
        let key = self.lower.resolve_dir(&normalize(path)?);
        if key.is_empty() || matches!(self.entries.get(&key), Some(e) if e.kind == EntryKind::Dir) {
            return Ok(());
        }
        let entry = self.implicit_dir(&key).unwrap_or(Entry {
            kind: EntryKind::Dir,
            mode,
            uid,
            gid,
        });
        self.insert(&key, entry)
    }

    /// The lower layers' directory at `path`, as an entry of this layer.
    fn implicit_dir(&self, path: &str) -> Option<Entry> {
        match self.lower.get(path) {
            Some(LowerEntry {
                kind: LowerKind::Dir,
                mode,
                uid,
                gid,
                ..
            }) => Some(Entry {
                kind: EntryKind::Dir,
                mode: *mode,
                uid: *uid,
                gid: *gid,
            }),
            _ => None,
        }
    }

    fn ensure_parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            if !self.entries.contains_key(parent) {
                let entry = self.implicit_dir(parent).unwrap_or(Entry {
                    kind: EntryKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                });
                self.entries.insert(parent.to_string(), entry);
            }
            end += i + 1;
        }
    }

    /// What the lower layers would learn from this layer (its index, see [`super::lower`]).
    pub fn lower_entries(&self) -> Vec<LowerEntry> {
        self.entries
            .iter()
            .map(|(path, e)| LowerEntry {
                path: path.clone(),
                kind: match &e.kind {
                    EntryKind::Dir => LowerKind::Dir,
                    EntryKind::Symlink(t) => LowerKind::Symlink(t.clone()),
                    EntryKind::File { .. } => LowerKind::Other,
                },
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
            })
            .collect()
    }

    /// Adds the file system object at `source` (not following a final symbolic link) as `dest`;
    /// a directory brings everything below it for which `keep(relative path)` is true.
    pub fn add_path(
        &mut self,
        source: &Path,
        dest: &str,
        options: &AddOptions,
        keep: &mut dyn FnMut(&Path) -> bool,
    ) -> Result<(), OciError> {
        let meta = fs::symlink_metadata(source).map_err(|e| OciError::io("read", source, e))?;
        self.add_one(source, &meta, dest, options)?;
        if meta.is_dir() {
            self.add_contents(source, dest, options, keep)?;
        }
        Ok(())
    }

    /// Adds everything below the directory `source` at `dest` (the directory itself is not
    /// added, but `dest` gets its parents).
    pub fn add_contents(
        &mut self,
        source: &Path,
        dest: &str,
        options: &AddOptions,
        keep: &mut dyn FnMut(&Path) -> bool,
    ) -> Result<(), OciError> {
        let walk = walkdir::WalkDir::new(source)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name();
        for item in walk {
            let item = item.map_err(|e| {
                let path = e.path().unwrap_or(source).to_path_buf();
                OciError::io(
                    "read",
                    &path,
                    e.into_io_error()
                        .unwrap_or(io::Error::other("a loop of links")),
                )
            })?;
            let rel = item.path().strip_prefix(source).unwrap_or(item.path());
            // An excluded directory can still hold included paths (`!` patterns): the filter
            // decides for each path, so the walk goes on below it.
            if !keep(rel) {
                continue;
            }
            let meta = item.metadata().map_err(|e| {
                OciError::io(
                    "read",
                    item.path(),
                    e.into_io_error().unwrap_or(io::Error::other("metadata")),
                )
            })?;
            let rel_text = rel.to_str().ok_or_else(|| {
                OciError::Invalid(format!(
                    "{}: a path that is not UTF-8",
                    item.path().display()
                ))
            })?;
            let target = format!("{}/{rel_text}", dest.trim_end_matches('/'));
            self.add_one(item.path(), &meta, &target, options)?;
        }
        Ok(())
    }

    fn add_one(
        &mut self,
        source: &Path,
        meta: &fs::Metadata,
        dest: &str,
        options: &AddOptions,
    ) -> Result<(), OciError> {
        let (uid, gid) = options.chown.unwrap_or((0, 0));
        let mode = options.chmod.unwrap_or(meta.permissions().mode() & 0o7777);
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            let target = fs::read_link(source).map_err(|e| OciError::io("read", source, e))?;
            let target = target.to_str().ok_or_else(|| {
                OciError::Invalid(format!(
                    "{}: a link target that is not UTF-8",
                    source.display()
                ))
            })?;
            EntryKind::Symlink(target.to_string())
        } else if ft.is_file() {
            EntryKind::File {
                source: source.to_path_buf(),
                size: meta.len(),
                inode: (meta.nlink() > 1).then(|| (meta.dev(), meta.ino())),
            }
        } else {
            // Sockets, FIFOs and devices have no place in an image built from files.
            return Ok(());
        };
        let mode = if matches!(kind, EntryKind::Symlink(_)) {
            0o777
        } else {
            mode
        };
        if kind == EntryKind::Dir {
            // A directory that is already there (from an earlier source) takes the new metadata
            // but keeps its contents.
            let key = self.lower.resolve_dir(&normalize(dest)?);
            if key.is_empty() {
                return Ok(());
            }
            self.ensure_parents(&key);
            self.entries.insert(
                key,
                Entry {
                    kind,
                    mode,
                    uid,
                    gid,
                },
            );
            return Ok(());
        }
        self.insert(
            dest,
            Entry {
                kind,
                mode,
                uid,
                gid,
            },
        )
    }
}

/// A layer blob in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// The compressed blob's digest.
    pub digest: Digest,
    /// The compressed size.
    pub size: u64,
    /// The uncompressed tar's digest.
    pub diff_id: Digest,
    /// The uncompressed tar's size.
    pub tar_size: u64,
    /// The OCI media type.
    pub media_type: &'static str,
}

/// Hashes and counts what goes through it.
pub(crate) struct Hashing<W> {
    pub inner: W,
    pub hasher: Sha256,
    pub count: u64,
}

impl<W> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The modification time of every entry: `SOURCE_DATE_EPOCH` when it is set to a number, else 0.
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes `tree` as a compressed layer into `store` (one pass, on `workers` threads) with every
/// modification time `mtime`.
pub fn write_layer(
    tree: &LayerTree,
    store: &Store,
    compression: Compression,
    mtime: u64,
    workers: usize,
) -> Result<LayerBlob, OciError> {
    let temp = store.temp()?;
    let temp_path = temp.path().to_path_buf();
    let write_err = |e: io::Error| OciError::io("write", &temp_path, e);
    let file = temp.reopen().map_err(write_err)?;
    let blob = Hashing::new(BufWriter::with_capacity(1 << 20, file));
    let compressor = Compressor::new(blob, compression, workers).map_err(write_err)?;
    let mut tar = TarWriter::new(Hashing::new(compressor));
    let mut first_of_inode: HashMap<(u64, u64), String> = HashMap::new();
    for (path, entry) in tree.entries() {
        let mut header = TarHeader {
            path,
            kind: TarKind::Dir,
            mode: entry.mode,
            uid: u64::from(entry.uid),
            gid: u64::from(entry.gid),
            mtime,
        };
        match &entry.kind {
            EntryKind::Dir => tar.append(&header, None).map_err(write_err)?,
            EntryKind::Symlink(target) => {
                header.kind = TarKind::Symlink(target.clone());
                tar.append(&header, None).map_err(write_err)?;
            }
            EntryKind::File {
                source,
                size,
                inode,
            } => {
                if let Some(first) = inode.and_then(|i| first_of_inode.get(&i)) {
                    header.kind = TarKind::Link(first.clone());
                    tar.append(&header, None).map_err(write_err)?;
                    continue;
                }
                if let Some(i) = inode {
                    first_of_inode.insert(*i, path.to_string());
                }
                let mut file = File::open(source).map_err(|e| OciError::io("read", source, e))?;
                header.kind = TarKind::File { size: *size };
                tar.append(&header, Some(&mut file)).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        OciError::io(
                            "read",
                            source,
                            io::Error::other("the file changed while it was read"),
                        )
                    } else {
                        write_err(e)
                    }
                })?;
            }
        }
    }
    let tar_out = tar.finish().map_err(write_err)?;
    let diff_id = Digest::from_hasher(tar_out.hasher);
    let tar_size = tar_out.count;
    let blob = tar_out.inner.finish().map_err(write_err)?;
    let digest = Digest::from_hasher(blob.hasher);
    let size = blob.count;
    let mut file = blob
        .inner
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    file.flush().map_err(write_err)?;
    drop(file);
    store.commit(temp, &digest)?;
    lower::save_index(store, &diff_id, &tree.lower_entries())?;
    Ok(LayerBlob {
        digest,
        size,
        diff_id,
        tar_size,
        media_type: compression.oci_media_type(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn tree_of(dir: &Path) -> LayerTree {
        let mut tree = LayerTree::new();
        tree.add_contents(dir, "/app", &AddOptions::default(), &mut |_| true)
            .unwrap();
        tree
    }

    #[test]
    fn the_same_tree_gives_the_same_blob_and_tar_lists_parents_sorted() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("b/c")).unwrap();
        fs::write(src.path().join("b/c/f.txt"), "data").unwrap();
        fs::write(src.path().join("a-b"), "x").unwrap();
        fs::hard_link(src.path().join("a-b"), src.path().join("z-link")).unwrap();
        std::os::unix::fs::symlink("b/c/f.txt", src.path().join("s")).unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let tree = tree_of(src.path());
        let one = write_layer(&tree, &store, Compression::default(), 0, 2).unwrap();
        let two = write_layer(&tree_of(src.path()), &store, Compression::default(), 0, 1).unwrap();
        assert_eq!(one, two);
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(File::open(store.path(&one.digest)).unwrap())
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(Digest::of(&tar_bytes), one.diff_id);
        let mut names = Vec::new();
        for e in tar::Archive::new(&tar_bytes[..]).entries().unwrap() {
            let e = e.unwrap();
            names.push((
                e.path().unwrap().display().to_string(),
                format!("{:?}", e.header().entry_type()),
                e.header().mtime().unwrap(),
            ));
        }
        let just_names: Vec<&str> = names.iter().map(|n| n.0.as_str()).collect();
        assert_eq!(
            just_names,
            [
                "app/",
                "app/a-b",
                "app/b/",
                "app/b/c/",
                "app/b/c/f.txt",
                "app/s",
                "app/z-link"
            ]
        );
        assert_eq!(names[6].1, "Link");
        assert_eq!(names[5].1, "Symlink");
        assert!(names.iter().all(|n| n.2 == 0));
    }

    #[test]
    fn paths_normalize() {
        assert_eq!(normalize("/a/./b/../c/").unwrap(), "a/c");
        assert_eq!(normalize("../../x").unwrap(), "x");
        assert_eq!(normalize("/").unwrap(), "");
    }
}
