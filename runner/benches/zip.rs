//! Packaging an artifact: [`buildagent_runner::artifacts`] (collect + zip on every core) against
//! `zip -r -q -6` of the same tree, in one process so both see the same machine.
//!
//! The tree is 20,000 files of mixed text, 1 GiB in all (sizes from a few hundred bytes to a few
//! MiB, plus two 24 MiB files that take the streamed path), generated under `/var/tmp`.
//! `BENCH_ZIP_FILES` and `BENCH_ZIP_MIB` change the size. Run with
//! `cargo bench -p buildagent-runner --bench zip`; the target is at most half of `zip`'s time.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use buildagent_runner::artifacts::{collect, package, CollectOptions, Packaging};
use buildagent_spec::{ArtifactSet, Spanned};

mod common;
use common::{cpu, peak_rss_mib, vocabulary, write_text, Rng};

fn generate(root: &Path, files: usize, total: u64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let words = vocabulary(&mut rng);
    let big = 24 << 20;
    let rest = total.saturating_sub(2 * big);
    // Log-uniform-ish sizes scaled to the wanted total.
    let raw: Vec<u64> = (0..files)
        .map(|_| {
            let s = 1u64 << (8 + rng.below(12));
            s + rng.below(s)
        })
        .collect();
    let sum: u64 = raw.iter().sum();
    for (i, r) in raw.iter().enumerate() {
        let size = (*r as u128 * rest as u128 / sum as u128) as u64;
        let dir = root.join(format!("pkg{:02}/mod{:03}", i % 37, i % 211));
        std::fs::create_dir_all(&dir).unwrap();
        write_text(&dir.join(format!("file{i:05}.txt")), size, &words, &mut rng);
    }
    for i in 0..2 {
        write_text(&root.join(format!("big{i}.log")), big, &words, &mut rng);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let files: usize = std::env::var("BENCH_ZIP_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mib: u64 = std::env::var("BENCH_ZIP_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let work = tempfile::Builder::new()
        .prefix("buildagent-zip-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let tree = work.path().join("tree");
    let t = Instant::now();
    generate(&tree, files, mib << 20);
    println!(
        "generated {files} files, {mib} MiB in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // Read the tree once so both sides start from a warm page cache.
    let warm = Command::new("sh")
        .arg("-c")
        .arg("find . -type f -exec cat {} + > /dev/null")
        .current_dir(&tree)
        .status()
        .unwrap();
    assert!(warm.success());

    let rss_before = peak_rss_mib();
    let cpu_before = cpu(nix::sys::resource::UsageWho::RUSAGE_SELF);
    let t = Instant::now();
    let set = ArtifactSet {
        files: vec![Spanned::synthetic("**/*".to_string())],
        ..ArtifactSet::default()
    };
    let entries = collect(&set, &CollectOptions::new(&tree), &mut |_| {}).unwrap();
    let written = package(
        &entries,
        &work.path().join("ours"),
        "artifacts",
        Packaging::Zip,
        &AtomicBool::new(false),
    )
    .unwrap();
    let ours = t.elapsed();
    let ours_cpu = cpu(nix::sys::resource::UsageWho::RUSAGE_SELF) - cpu_before;
    let rss_after = peak_rss_mib();

    let theirs_zip = work.path().join("theirs.zip");
    let t = Instant::now();
    let status = Command::new("zip")
        .args(["-r", "-q", "-6"])
        .arg(&theirs_zip)
        .arg(".")
        .current_dir(&tree)
        .status()
        .expect("the zip tool (apt-get install zip)");
    assert!(status.success());
    let theirs = t.elapsed();
    let theirs_cpu = cpu(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
    let theirs_bytes = std::fs::metadata(&theirs_zip).unwrap().len();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "buildagent: {:>7.2}s  {:>6} MiB  {} entries  ({cores} cores, {:.1} CPU s; peak RSS {:.0} MiB, {:.0} MiB before)",
        ours.as_secs_f64(),
        written.bytes >> 20,
        written.files,
        ours_cpu,
        rss_after,
        rss_before
    );
    println!(
        "zip -r -6:  {:>7.2}s  {:>6} MiB  ({:.1} CPU s, with the warm-up `cat`)",
        theirs.as_secs_f64(),
        theirs_bytes >> 20,
        theirs_cpu
    );
    println!(
        "ratio: {:.2} of zip's time (target <= 0.50)",
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
}
