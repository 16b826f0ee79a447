//! Any bytes as a cache archive restored into a source directory: the reader must not panic,
//! and whatever the archive says (`..`, absolute names, symlinks or hard links pointing out), it
//! must write nothing outside the directories the cache paths name.

#![no_main]

use std::path::Path;

use buildagent_runner::cache::archive::{unpack, verify, CachePaths};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let paths = CachePaths::new(&src, &["**/*"]).unwrap();
    let _ = verify(&paths, data);
    let _ = unpack(&paths, data);
    assert_inside(&outside, &src, dir.path());
});

/// Nothing appeared in `outside` or beside `src`, and no link in `src` leads out of it.
fn assert_inside(outside: &Path, src: &Path, root: &Path) {
    assert_eq!(
        std::fs::read_dir(outside).unwrap().count(),
        0,
        "written outside"
    );
    let beside: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(beside.len(), 2, "written beside the source: {beside:?}");
    for entry in walkdir::WalkDir::new(src).into_iter().flatten() {
        if entry.path_is_symlink() {
            if let Ok(target) = std::fs::canonicalize(entry.path()) {
                assert!(
                    target.starts_with(src.canonicalize().unwrap()),
                    "{:?} -> {target:?}",
                    entry.path()
                );
            }
        }
    }
}
