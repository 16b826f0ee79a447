//! Any bytes as a `.dockerignore` (up to the first NUL) and the paths to match against it (the
//! lines after it): parsing and matching must not panic, and matching is a pure function.

#![no_main]

use buildagent_runner::docker::dockerignore::DockerIgnore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (patterns, paths) = text.split_once('\0').unwrap_or((&text, "a/b\nc"));
    let Ok(ignore) = DockerIgnore::parse(patterns) else {
        return;
    };
    for path in paths.split('\n') {
        let excluded = ignore.is_excluded(path);
        assert_eq!(excluded, ignore.is_excluded(path), "{path:?}");
        let _ = ignore.must_walk_excluded_dir(path);
    }
});
