//! Where cache entries live: the [`CacheStore`] trait and its local directory implementation.
//!
//! [`LocalStore`] layout, under its root directory:
//!
//! ```text
//! <project>/<version>/default.tar.zst      the entry of a cache without `key` (replaced each save)
//! <project>/<version>/keys/<key>.tar.zst   a keyed entry (written once, never replaced)
//! <project>/<version>/.tmp-*               entries being written (renamed into place when whole)
//! ```
//!
//! [`S3Store`](super::S3Store) keeps the same layout under its bucket and prefix (without the
//! temporary files: an object appears whole or not at all).

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

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

/// A local file holding an entry's bytes, from [`CacheStore::fetch`].
#[derive(Debug)]
pub enum Fetched {
    /// The store's own file (a local store).
    Stored(PathBuf),
    /// A download, removed when this is dropped.
    Downloaded(tempfile::NamedTempFile),
}

impl Fetched {
    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            Fetched::Stored(path) => path,
            Fetched::Downloaded(temp) => temp.path(),
        }
    }
}

/// A place that keeps cache entries. Its methods are asynchronous because a remote store's are;
/// archives are packed and unpacked by the caller, on a blocking thread, in local files.
pub trait CacheStore: Send + Sync {
    /// The entry of `slot`, if there is one.
    fn get<'a>(&'a self, slot: &'a Slot) -> BoxFuture<'a, io::Result<Option<EntryInfo>>>;
    /// The newest keyed entry of `slot`'s project and version whose key starts with `prefix`.
    fn newest_with_prefix<'a>(
        &'a self,
        slot: &'a Slot,
        prefix: &'a str,
    ) -> BoxFuture<'a, io::Result<Option<EntryInfo>>>;
    /// A local file with the bytes of an entry found by [`get`](Self::get) or
    /// [`newest_with_prefix`](Self::newest_with_prefix).
    fn fetch<'a>(&'a self, entry: &'a EntryInfo) -> BoxFuture<'a, io::Result<Fetched>>;
    /// A new empty temporary file to write the entry of `slot` into, then hand to
    /// [`put`](Self::put); removed if it never is.
    fn staging(&self, slot: &Slot) -> io::Result<tempfile::NamedTempFile>;
    /// Stores `file` (from [`staging`](Self::staging), written and flushed) as the entry of
    /// `slot`, atomically: a reader sees the old entry or the whole new one. A keyed entry that
    /// already exists is left alone (`Ok(false)`); an unkeyed one is replaced. When `cancel` fires
    /// the store gives up and stores nothing.
    fn put<'a>(
        &'a self,
        slot: &'a Slot,
        file: tempfile::NamedTempFile,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, io::Result<bool>>;
    /// Where the entry of `slot` is (or would be) kept, as logs show it: a path or an `s3://` URL.
    fn location(&self, slot: &Slot) -> String;
}

/// A store in a local directory (see the module docs for the layout).
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
}

pub(super) const SUFFIX: &str = ".tar.zst";

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
pub(super) fn safe_name(name: &str) -> String {
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

impl LocalStore {
    fn get_now(&self, slot: &Slot) -> io::Result<Option<EntryInfo>> {
        let path = self.path(slot);
        match path.metadata() {
            Ok(m) if m.is_file() => Ok(Some(info(slot.key.clone(), &path))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn newest_now(&self, slot: &Slot, prefix: &str) -> io::Result<Option<EntryInfo>> {
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

    fn put_now(&self, slot: &Slot, file: tempfile::NamedTempFile) -> io::Result<bool> {
        if slot.key.is_some() && self.get_now(slot)?.is_some() {
            return Ok(false);
        }
        let path = self.path(slot);
        file.as_file().sync_all()?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if slot.key.is_some() {
            // A hard link never replaces an entry another build saved meanwhile.
            match std::fs::hard_link(file.path(), &path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        } else {
            file.persist(&path).map_err(|e| e.error)?;
            Ok(true)
        }
    }
}

impl CacheStore for LocalStore {
    fn get<'a>(&'a self, slot: &'a Slot) -> BoxFuture<'a, io::Result<Option<EntryInfo>>> {
        Box::pin(std::future::ready(self.get_now(slot)))
    }

    fn newest_with_prefix<'a>(
        &'a self,
        slot: &'a Slot,
        prefix: &'a str,
    ) -> BoxFuture<'a, io::Result<Option<EntryInfo>>> {
        Box::pin(std::future::ready(self.newest_now(slot, prefix)))
    }

    fn fetch<'a>(&'a self, entry: &'a EntryInfo) -> BoxFuture<'a, io::Result<Fetched>> {
        Box::pin(std::future::ready(Ok(Fetched::Stored(PathBuf::from(
            &entry.location,
        )))))
    }

    fn location(&self, slot: &Slot) -> String {
        self.path(slot).display().to_string()
    }

    fn staging(&self, slot: &Slot) -> io::Result<tempfile::NamedTempFile> {
        // In the entry's own directory, so that `put` is a rename on one file system.
        let dir = self.dir(slot);
        std::fs::create_dir_all(&dir)?;
        tempfile::Builder::new().prefix(".tmp-").tempfile_in(&dir)
    }

    fn put<'a>(
        &'a self,
        slot: &'a Slot,
        file: tempfile::NamedTempFile,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, io::Result<bool>> {
        let result = if cancel.is_cancelled() {
            Err(io::Error::other("cancelled"))
        } else {
            self.put_now(slot, file)
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use std::fs::File;
    use std::io::Write;

    fn slot(key: Option<&str>) -> Slot {
        Slot {
            project: "p".into(),
            version: "v1".into(),
            key: key.map(str::to_string),
        }
    }

    fn put(store: &LocalStore, slot: &Slot, data: &[u8]) -> bool {
        let mut file = store.staging(slot).unwrap();
        file.write_all(data).unwrap();
        block_on(store.put(slot, file, &CancellationToken::new())).unwrap()
    }

    fn get(store: &LocalStore, slot: &Slot) -> Option<EntryInfo> {
        block_on(store.get(slot)).unwrap()
    }

    fn read(store: &LocalStore, entry: &EntryInfo) -> Vec<u8> {
        std::fs::read(block_on(store.fetch(entry)).unwrap().path()).unwrap()
    }

    #[test]
    fn keyed_entries_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        assert_eq!(get(&store, &slot(Some("k"))), None);
        assert!(put(&store, &slot(Some("k")), b"one"));
        assert!(!put(&store, &slot(Some("k")), b"two"));
        let entry = get(&store, &slot(Some("k"))).unwrap();
        assert_eq!(read(&store, &entry), b"one");
        // Another version is another entry.
        let other = Slot {
            version: "v2".into(),
            ..slot(Some("k"))
        };
        assert_eq!(get(&store, &other), None);
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
        let entry = get(&store, &slot(None)).unwrap();
        assert_eq!(read(&store, &entry), b"two");
    }

    #[test]
    fn an_unused_or_cancelled_staging_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        drop(store.staging(&slot(Some("k"))).unwrap());
        let cancel = CancellationToken::new();
        cancel.cancel();
        let file = store.staging(&slot(Some("k"))).unwrap();
        let err = block_on(store.put(&slot(Some("k")), file, &cancel)).unwrap_err();
        assert_eq!(err.to_string(), "cancelled");
        assert_eq!(get(&store, &slot(Some("k"))), None);
        assert_eq!(
            std::fs::read_dir(dir.path().join("p/v1")).unwrap().count(),
            0
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
        let hit = block_on(store.newest_with_prefix(&slot(None), "npm-"))
            .unwrap()
            .unwrap();
        assert_eq!(hit.key.as_deref(), Some("npm-a"));
        assert_eq!(
            block_on(store.newest_with_prefix(&slot(None), "x")).unwrap(),
            None
        );
    }
}
