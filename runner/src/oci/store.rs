//! The local content store: blobs by digest, `ROOT/blobs/sha256/<hex>`, written through a
//! temporary file in `ROOT/tmp` and renamed into place, so a blob is there whole or not at all.
//!
//! Layers written here and base layers fetched from a registry stay for the next build (a
//! base image's layers are downloaded once, when an output needs their bytes or a new layer needs
//! to know what they hold; `ROOT/index/` keeps each layer's tar headers, see [`super::lower`]).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::spec::Digest;
use super::OciError;

/// A content store directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, OciError> {
        let root = root.into();
        for dir in [root.join("blobs/sha256"), root.join("tmp")] {
            fs::create_dir_all(&dir).map_err(|e| OciError::io("create", &dir, e))?;
        }
        Ok(Store { root })
    }

    /// The default store: `$XDG_CACHE_HOME/buildagent/oci`, else `~/.cache/buildagent/oci`, else
    /// a directory in the system's temporary directory.
    pub fn default_dir() -> PathBuf {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("buildagent/oci")
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` is (or would be).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether the blob is in the store.
    pub fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// A new temporary file in the store, to be [`Store::commit`]ted.
    pub fn temp(&self) -> Result<tempfile::NamedTempFile, OciError> {
        let dir = self.root.join("tmp");
        tempfile::NamedTempFile::new_in(&dir).map_err(|e| OciError::io("create a file in", &dir, e))
    }

    /// Moves a finished temporary file into place as `digest` (a blob already there stays).
    pub fn commit(&self, temp: tempfile::NamedTempFile, digest: &Digest) -> Result<(), OciError> {
        let path = self.path(digest);
        if path.is_file() {
            return Ok(());
        }
        // Readable by all, like any file a tool writes (a temporary file starts as 0600).
        let _ = temp
            .as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        temp.persist(&path)
            .map_err(|e| OciError::io("write", &path, e.error))?;
        Ok(())
    }

    /// Stores `bytes` and returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, OciError> {
        let digest = Digest::of(bytes);
        if !self.has(&digest) {
            let mut temp = self.temp()?;
            temp.write_all(bytes)
                .map_err(|e| OciError::io("write", temp.path(), e))?;
            self.commit(temp, &digest)?;
        }
        Ok(digest)
    }

    /// Reads a blob whole (manifests and configurations).
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, OciError> {
        let path = self.path(digest);
        fs::read(&path).map_err(|e| OciError::io("read", &path, e))
    }
}

/// Copies `from` to `to` by a hard link when both are on one file system, else byte by byte
/// (through a temporary file beside `to`, renamed into place).
pub(crate) fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    if to.is_file() {
        return Ok(());
    }
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let dir = to.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    io::copy(&mut fs::File::open(from)?, temp.as_file_mut())?;
    temp.persist(to).map_err(|e| e.error)?;
    Ok(())
}
