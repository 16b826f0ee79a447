//! Any bytes as a zip from S3 extracted into a directory: the reader must not panic, and no
//! entry (`..`, absolute names, symlinks pointing out) may write outside it.

#![no_main]

use std::io::Write;

use buildagent_runner::fetch::zip::extract;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(data).unwrap();
    use std::io::Seek;
    file.rewind().unwrap();
    let _ = extract(file, &dest);
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "written outside"
    );
    let beside = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(beside <= 2, "written beside the destination");
    if dest.exists() {
        let root = dest.canonicalize().unwrap();
        for entry in walkdir::WalkDir::new(&dest).into_iter().flatten() {
            if entry.path_is_symlink() {
                if let Ok(target) = std::fs::canonicalize(entry.path()) {
                    assert!(
                        target.starts_with(&root),
                        "{:?} -> {target:?}",
                        entry.path()
                    );
                }
            }
        }
    }
});
