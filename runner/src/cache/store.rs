//! Where cache entries live: the [`CacheStore`] trait and its local directory implementation.
//!
//! [`LocalStore`] layout, under its root directory:
//!
//! ```text
//! <project>/<version>/default.tar.zst      the entry of a cache without `key` (replaced each save)
//! <project>/<version>/keys/<key>.tar.zst   a keyed entry (written once, never replaced)
//! <project>/<version>/.tmp-*               entries being written (renamed into place when whole)
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Which entry: a project's cache for one path list (version), keyed or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The project (the source directory's name for local builds).
    pub project: String,
    /// [`super::version`] of the cached paths.
    pub version: String,
    /// The expanded key; `None` for the one entry a project without `key` refreshes.
    pub key: Option<String>,
}

/// An entry found in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// The entry's key (`None`: the unkeyed entry).
    pub key: Option<String>,
    /// Where it is, as shown in log lines.
    pub location: String,
}

/// A place that keeps cache entries.
pub trait CacheStore: Send + Sync {
    /// The entry of `slot`, if there is one.
    fn get(&self, slot: &Slot) -> io::Result<Option<EntryInfo>>;
    /// The newest keyed entry of `slot`'s project and version whose key starts with `prefix`.
    fn newest_with_prefix(&self, slot: &Slot, prefix: &str) -> io::Result<Option<EntryInfo>>;
    /// Reads an entry found by [`get`](Self::get) or [`newest_with_prefix`](Self::newest_with_prefix).
    fn open(&self, entry: &EntryInfo) -> io::Result<Box<dyn Read + Send>>;
    /// Writes the entry of `slot` with `write`, atomically: a reader sees the old entry or the
    /// whole new one. A keyed entry that already exists is left alone (`Ok(false)`, and `write`
    /// is not called); an unkeyed one is replaced.
    fn put(
        &self,
        slot: &Slot,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<bool>;
}

/// A store in a local directory (see the module docs for the layout).
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
}

const SUFFIX: &str = ".tar.zst";

impl LocalStore {
    /// A store under `root` (created on the first save).
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: root.into() }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, slot: &Slot) -> PathBuf {
        self.root.join(safe_name(&slot.project)).join(&slot.version)
    }

    fn path(&self, slot: &Slot) -> PathBuf {
        let dir = self.dir(slot);
        match &slot.key {
            Some(key) => dir.join("keys").join(format!("{key}{SUFFIX}")),
            None => dir.join(format!("default{SUFFIX}")),
        }
    }
}

/// A project name as one directory name: no `/`, not `.` or `..`, not empty.
fn safe_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    match name.as_str() {
        "" | "." | ".." => format!("_{name}"),
        _ => name,
    }
}

fn info(slot_key: Option<String>, path: &Path) -> EntryInfo {
    EntryInfo {
        key: slot_key,
        location: path.display().to_string(),
    }
}

impl CacheStore for LocalStore {
    fn get(&self, slot: &Slot) -> io::Result<Option<EntryInfo>> {
        let path = self.path(slot);
        match path.metadata() {
            Ok(m) if m.is_file() => Ok(Some(info(slot.key.clone(), &path))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn newest_with_prefix(&self, slot: &Slot, prefix: &str) -> io::Result<Option<EntryInfo>> {
        let dir = self.dir(slot).join("keys");
        let read = match std::fs::read_dir(&dir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut best: Option<(SystemTime, String)> = None;
        for item in read {
            let item = item?;
            let Some(key) = item
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .map(str::to_string)
            else {
                continue;
            };
            if !key.starts_with(prefix) {
                continue;
            }
            let meta = item.metadata()?;
            if !meta.is_file() {
                continue;
            }
            let time = meta.modified()?;
            if best.as_ref().is_none_or(|(t, k)| (time, &key) > (*t, k)) {
                best = Some((time, key));
            }
        }
        Ok(best.map(|(_, key)| {
            let path = dir.join(format!("{key}{SUFFIX}"));
            info(Some(key), &path)
        }))
    }

    fn open(&self, entry: &EntryInfo) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::BufReader::new(File::open(&entry.location)?)))
    }

    fn put(
        &self,
        slot: &Slot,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<bool> {
        if slot.key.is_some() && self.get(slot)?.is_some() {
            return Ok(false);
        }
        let path = self.path(slot);
        let dir = self.dir(slot);
        std::fs::create_dir_all(path.parent().unwrap_or(&dir))?;
        let temp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&dir)?;
        {
            let mut out = io::BufWriter::new(temp.as_file());
            write(&mut out)?;
            out.flush()?;
        }
        temp.as_file().sync_all()?;
        if slot.key.is_some() {
            // A hard link never replaces an entry another build saved meanwhile.
            match std::fs::hard_link(temp.path(), &path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        } else {
            temp.persist(&path).map_err(|e| e.error)?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(key: Option<&str>) -> Slot {
        Slot {
            project: "p".into(),
            version: "v1".into(),
            key: key.map(str::to_string),
        }
    }

    fn put(store: &LocalStore, slot: &Slot, data: &[u8]) -> bool {
        store.put(slot, &mut |w| w.write_all(data)).unwrap()
    }

    fn read(store: &LocalStore, entry: &EntryInfo) -> Vec<u8> {
        let mut out = Vec::new();
        store.open(entry).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn keyed_entries_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        assert_eq!(store.get(&slot(Some("k"))).unwrap(), None);
        assert!(put(&store, &slot(Some("k")), b"one"));
        assert!(!put(&store, &slot(Some("k")), b"two"));
        let entry = store.get(&slot(Some("k"))).unwrap().unwrap();
        assert_eq!(read(&store, &entry), b"one");
        // Another version is another entry.
        let other = Slot {
            version: "v2".into(),
            ..slot(Some("k"))
        };
        assert_eq!(store.get(&other).unwrap(), None);
        // No temporary file is left.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("p/v1"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keys"]);
    }

    #[test]
    fn the_unkeyed_entry_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        assert!(put(&store, &slot(None), b"one"));
        assert!(put(&store, &slot(None), b"two"));
        let entry = store.get(&slot(None)).unwrap().unwrap();
        assert_eq!(read(&store, &entry), b"two");
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let err = store
            .put(&slot(Some("k")), &mut |_| Err(io::Error::other("boom")))
            .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(store.get(&slot(Some("k"))).unwrap(), None);
        assert_eq!(
            std::fs::read_dir(dir.path().join("p/v1")).unwrap().count(),
            1
        );
    }

    #[test]
    fn fallback_prefixes_pick_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        for key in ["npm-a", "npm-b", "other"] {
            put(&store, &slot(Some(key)), key.as_bytes());
        }
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let path = dir.path().join("p/v1/keys/npm-b.tar.zst");
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let hit = store
            .newest_with_prefix(&slot(None), "npm-")
            .unwrap()
            .unwrap();
        assert_eq!(hit.key.as_deref(), Some("npm-a"));
        assert_eq!(store.newest_with_prefix(&slot(None), "x").unwrap(), None);
    }
}
