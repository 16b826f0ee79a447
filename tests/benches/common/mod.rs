//! What the tests crate's benches share: the agent they run and the median of their rounds.
#![allow(dead_code)] // each bench uses its own part

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The agent under measure: `BUILDAGENT_BENCH_AGENT` (for A/B runs against another build), else
/// the `buildagent` built beside this bench (`cargo build --release -p buildagent` first).
pub fn agent() -> PathBuf {
    if let Some(bin) = std::env::var_os("BUILDAGENT_BENCH_AGENT") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("buildagent");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --release -p buildagent` first",
        bin.display()
    );
    bin
}

/// The median of some timings.
pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}
