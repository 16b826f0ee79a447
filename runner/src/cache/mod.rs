//! Build caches (`cache:` in the buildspec) kept in a store: what is cached, how entries are
//! named, and how they are packed and restored.
//!
//! # Entries
//! An entry is one tar stream (GNU headers) whose members are sorted by name, segment by
//! segment, cut into zstd frames of 4 MiB compressed in parallel, each preceded by a skippable
//! *index frame* that holds a compressed copy of its tar headers and a CRC-32 ([`archive`] and
//! its `frames` module have the layout). Any zstd decoder skips the index frames, so
//! `zstd -d | tar -x` reads an entry too. Each member's name starts with its *anchor*:
//!
//! * `src/<path>`: a file under the source directory (`CODEBUILD_SRC_DIR`), for a relative
//!   `paths` glob such as `node_modules/**/*`;
//! * `abs/<path>`: a file under `/`, for an absolute glob such as `/root/.m2/**/*`.
//!
//! Regular files keep their mode and modification time; symbolic links are stored as links.
//! Directories are not stored: they are created as needed on restore. An entry is written to a
//! staging file of its store ([`CacheStore::staging`]) and appears under its name only when
//! complete ([`CacheStore::put`]); a stopped or failed save leaves the store as it was.
//!
//! # Versions and keys
//! The *version* of an entry is a hash of the `paths` list ([`version`]): the same key with other
//! paths is another entry. A key ([`check_key`]) is never empty and never holds `/` or `..`.
//!
//! # Restoring safely
//! A restore is two passes. [`archive::verify`] reads the whole entry before anything is
//! written: it checks every frame's CRC-32 but decompresses only the header copies, and rejects
//! the entry unless every member is a regular file or a symbolic link whose name has a known
//! anchor, no `.`, `..` or empty segment, matches one of the cached `paths`, comes after the
//! member before it in the sorted order (so a name appears once and nothing is stored below a
//! file or link of the same entry), and would be written under directories that are real
//! directories on disk (not links, not files). [`archive::unpack`] then decompresses and writes
//! on pools of threads, checks each header against the copy `verify` saw, opens every directory
//! with `O_NOFOLLOW` and creates files relative to it, so nothing is ever written through a
//! link, and replaces an existing file or link instead of writing into it.
//!
//! Entries written before the index existed (one plain zstd frame, members unsorted) are still
//! read, serially; a keyed one whose members are out of order is refused, a warning and a miss,
//! until its key changes.

pub mod archive;
mod s3_store;
pub mod store;

pub use archive::{CachePaths, Stats};
pub use s3_store::S3Store;
pub use store::{CacheStore, EntryInfo, Fetched, LocalStore, Slot};

/// The version of the entries for `paths`: a hash of the list (FNV-1a, 64 bits, hex), stable
/// across runs and builds of the agent.
pub fn version<S: AsRef<str>>(paths: &[S]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for path in paths {
        for byte in path.as_ref().bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// Checks an expanded cache key (or fallback key): not empty, no `/`, no `..`. The error names
/// the key as written (`written`) and as expanded.
pub fn check_key(written: &str, expanded: &str) -> Result<(), String> {
    let why = if expanded.is_empty() {
        "it expands to an empty string"
    } else if expanded.contains('/') {
        "it contains '/'"
    } else if expanded.contains("..") {
        "it contains '..'"
    } else if expanded.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(format!(
        "invalid cache key {written:?} (expanded to {expanded:?}): {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_depends_on_the_path_list() {
        assert_eq!(version(&["a/**/*"]), version(&["a/**/*".to_string()]));
        assert_ne!(version(&["a/**/*"]), version(&["b/**/*"]));
        assert_ne!(version(&["a", "b"]), version(&["ab"]));
        assert_eq!(version(&["a"]).len(), 16);
    }

    #[test]
    fn keys_are_checked_after_expansion() {
        assert!(check_key("npm-$X", "npm-1").is_ok());
        for bad in ["", "a/b", "..", "a..b"] {
            let err = check_key("k-$X", bad).unwrap_err();
            assert!(err.contains("\"k-$X\""), "{err}");
        }
    }
}
