//! Saving and restoring a build cache: [`buildagent_runner::cache::archive`] (`pack` into a
//! `.tar.zst` file; `verify` then `unpack` into an empty directory, as a restore does) against
//! `tar -c . | zstd -3 -q -o FILE` and `zstd -d -c FILE | tar -x -C DIR` of the same tree.
//!
//! The tree is a `node_modules`-like 20,000 files, 1 GiB in all, generated under `/var/tmp`:
//! mostly small text and code files (a few hundred bytes to a few hundred KiB, some
//! executable), 200 links in `.bin/`, and four large files (two text logs, two incompressible
//! "jars") holding a quarter of the bytes. `BENCH_CACHE_FILES` and `BENCH_CACHE_MIB` change the
//! size, `BENCH_CACHE_RUNS` the number of rounds (default 3; each side's best time is kept, and
//! each round is printed), `BENCH_CACHE_KEEP=1` keeps the files. Run with
//! `cargo bench -p buildagent-runner --bench cache`; the target is at most the baseline's time
//! (ratio <= 1.00) with a peak RSS under 128 MiB.
//!
//! Our side runs in a child process (this binary again, with `--child`), so its peak RSS
//! (`VmHWM`) and CPU time are its own. Before every step `sync` writes back the previous step's
//! files and the tree and entries are read into the page cache, so both sides start from the
//! same state; the sides alternate which goes first. Restores go to new directories and nothing
//! is deleted until the end (so the bench needs `BENCH_CACHE_MIB * (2 * runs + 2)` MiB free
//! under `/var/tmp`, and checks first): ext4 without a journal (this machine's) allocates inodes
//! slowly for a few minutes after many were freed, which also slows a run that starts right
//! after another one's cleanup, or while other work deletes many files.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use buildagent_runner::cache::archive;
use buildagent_runner::cache::CachePaths;
use nix::sys::resource::UsageWho;

mod common;
use common::{cpu, peak_rss_mib, vocabulary, write_text, Rng};

/// Writes `size` bytes that do not compress (like a jar or a tarball).
fn write_binary(path: &Path, size: u64, rng: &mut Rng) {
    let mut out = BufWriter::new(File::create(path).unwrap());
    let mut written = 0u64;
    while written < size {
        let word = rng.next().to_le_bytes();
        let take = (size - written).min(8) as usize;
        out.write_all(&word[..take]).unwrap();
        written += take as u64;
    }
    out.flush().unwrap();
}

fn generate(root: &Path, files: usize, total: u64) {
    use std::os::unix::fs::PermissionsExt;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let words = vocabulary(&mut rng);
    let modules = root.join("node_modules");
    let big = total / 16;
    let rest = total.saturating_sub(4 * big);
    // Log-uniform-ish sizes scaled to the wanted total.
    let raw: Vec<u64> = (0..files)
        .map(|_| {
            let s = 1u64 << (8 + rng.below(12));
            s + rng.below(s)
        })
        .collect();
    let sum: u64 = raw.iter().sum::<u64>().max(1);
    let packages = (files / 40).max(1);
    for (i, r) in raw.iter().enumerate() {
        let size = (*r as u128 * rest as u128 / sum as u128) as u64;
        let package = format!("pkg{:04}", i % packages);
        let dir = modules.join(&package).join(match i % 5 {
            0 => "lib".to_string(),
            1 => format!("lib/sub{}", i % 7),
            2 => "dist".to_string(),
            3 => format!("src/mod{}/deep{}", i % 3, i % 11),
            _ => String::new(),
        });
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("file{i:05}.js"));
        write_text(&path, size, &words, &mut rng);
        if i % 13 == 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let bin = modules.join(".bin");
    std::fs::create_dir_all(&bin).unwrap();
    for i in 0..200.min(files) {
        let target = format!("../pkg{:04}/file{i:05}.js", i % packages);
        std::os::unix::fs::symlink(target, bin.join(format!("tool{i}"))).unwrap();
    }
    for i in 0..2 {
        write_text(
            &with_dir(root, &format!("logs/big{i}.log")),
            big,
            &words,
            &mut rng,
        );
        write_binary(&with_dir(root, &format!("m2/lib{i}.jar")), big, &mut rng);
    }
}

/// `root/name`, after creating its parent directory.
fn with_dir(root: &Path, name: &str) -> PathBuf {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    path
}

/// The child: runs one side of ours and prints
/// `seconds cpu_seconds peak_rss_mib files bytes verify_seconds`.
fn child(args: &[String]) {
    let t = Instant::now();
    let mut verify_time = 0.0;
    let stats = match (args[0].as_str(), &args[1..]) {
        ("pack", [tree, out]) => {
            let paths = CachePaths::new(Path::new(tree), &["**/*"]).unwrap();
            let mut out = BufWriter::new(File::create(out).unwrap());
            let stats = archive::pack(&paths, &mut out, &mut |n| panic!("{n}")).unwrap();
            out.flush().unwrap();
            stats
        }
        ("restore", [entry, dir]) => {
            let paths = CachePaths::new(Path::new(dir), &["**/*"]).unwrap();
            let open = || BufReader::new(File::open(entry).unwrap());
            let verified = archive::verify(&paths, open()).unwrap();
            verify_time = t.elapsed().as_secs_f64();
            let stats = archive::unpack(&paths, open()).unwrap();
            assert_eq!(verified, stats);
            stats
        }
        _ => panic!("unknown child arguments {args:?}"),
    };
    println!(
        "{} {} {} {} {} {verify_time}",
        t.elapsed().as_secs_f64(),
        cpu(UsageWho::RUSAGE_SELF),
        peak_rss_mib(),
        stats.files,
        stats.bytes
    );
}

struct Ours {
    time: Duration,
    verify: f64,
    cpu: f64,
    rss: f64,
    files: u64,
    bytes: u64,
}

fn ours(op: &str, a: &Path, b: &Path) -> Ours {
    let t = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--child", op])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    let wall = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<f64> = text
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    // The whole child's wall time: its start and exit are part of the work.
    Ours {
        time: wall,
        verify: fields[5],
        cpu: fields[1],
        rss: fields[2],
        files: fields[3] as u64,
        bytes: fields[4] as u64,
    }
}

/// Runs `script` with `sh -c` in `dir`; its wall time and its CPU seconds (every process of it).
fn shell(script: &str, dir: &Path) -> (Duration, f64) {
    let before = cpu(UsageWho::RUSAGE_CHILDREN);
    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .unwrap();
    let time = t.elapsed();
    assert!(status.success(), "{script} failed");
    (time, cpu(UsageWho::RUSAGE_CHILDREN) - before)
}

/// The same starting state for every step: earlier writes flushed, the tree and the entries
/// in the page cache. Restores go to new directories: nothing is deleted between steps, as
/// ext4 is slow to allocate inodes for a while after many were freed.
fn settle(work: &Path) {
    shell(
        "sync; find tree -type f -exec cat {} + > /dev/null; cat *.tar.zst > /dev/null 2>&1; true",
        work,
    );
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child(&args[i + 1..]);
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let have_zstd = Command::new("zstd").arg("--version").output();
    assert!(
        have_zstd.is_ok_and(|o| o.status.success()),
        "the zstd tool is needed (apt-get install -y zstd)"
    );
    let files: usize = env_or("BENCH_CACHE_FILES", 20_000);
    let mib: u64 = env_or("BENCH_CACHE_MIB", 1024);
    let runs: usize = env_or("BENCH_CACHE_RUNS", 3);
    // The tree, two entries and two restores per round stay until the end: check the room
    // first, rather than fill a disk other work shares.
    let need = mib * (2 * runs as u64 + 2) + 1024;
    let fs = nix::sys::statvfs::statvfs("/var/tmp").unwrap();
    let free = (fs.blocks_available() as u64 * fs.fragment_size() as u64) >> 20;
    assert!(
        free >= need,
        "the bench needs {need} MiB free under /var/tmp, there are {free}"
    );
    let work = tempfile::Builder::new()
        .prefix("buildagent-cache-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    // BENCH_CACHE_KEEP=1 leaves the tree and the entries behind, for a closer look.
    let work = if std::env::var_os("BENCH_CACHE_KEEP").is_some() {
        work.keep()
    } else {
        work.path().to_path_buf()
    };
    let work = work.as_path();
    let tree = work.join("tree");
    let t = Instant::now();
    generate(&tree, files, mib << 20);
    println!(
        "generated {files} files + 200 links, {mib} MiB in {:.1}s under {}",
        t.elapsed().as_secs_f64(),
        work.display()
    );
    let our_entry = work.join("ours.tar.zst");
    let their_entry = work.join("theirs.tar.zst");
    let pack_script = format!(
        "tar -c -C tree . | zstd -3 -q -f -o {}",
        their_entry.display()
    );

    // Best (time, CPU seconds) of: our pack, theirs, our restore, theirs; our verify's share.
    let mut best: [Option<(Duration, f64)>; 4] = [None; 4];
    let mut verify = 0.0;
    let mut rss = [0f64; 2];
    let mut entry = (0, 0);
    for run in 0..runs {
        let mut times = [Duration::ZERO; 4];
        let mut keep = |slot: usize, time: Duration, cpu: f64| {
            times[slot] = time;
            if best[slot].is_none_or(|(t, _)| time < t) {
                best[slot] = Some((time, cpu));
                true
            } else {
                false
            }
        };
        // Alternate which side goes first.
        for side in [run % 2, 1 - run % 2] {
            settle(work);
            if side == 0 {
                let o = ours("pack", &tree, &our_entry);
                entry = (o.files, o.bytes);
                rss[0] = rss[0].max(o.rss);
                keep(0, o.time, o.cpu);
            } else {
                let (time, cpu) = shell(&pack_script, work);
                keep(1, time, cpu);
            }
        }
        for side in [run % 2, 1 - run % 2] {
            let restore = work.join(format!("restore-{run}-{side}"));
            std::fs::create_dir(&restore).unwrap();
            settle(work);
            if side == 0 {
                let o = ours("restore", &our_entry, &restore);
                assert_eq!((o.files, o.bytes), entry);
                rss[1] = rss[1].max(o.rss);
                if keep(2, o.time, o.cpu) {
                    verify = o.verify;
                }
                if run == 0 {
                    let diff = Command::new("diff")
                        .args(["-r", "-q", "--no-dereference"])
                        .arg(&tree)
                        .arg(&restore)
                        .status()
                        .unwrap();
                    assert!(diff.success(), "the restored tree differs");
                }
            } else {
                let script = format!(
                    "zstd -d -q -c {} | tar -x -C {}",
                    their_entry.display(),
                    restore.display()
                );
                let (time, cpu) = shell(&script, work);
                keep(3, time, cpu);
            }
        }
        let [a, b, c, d] = times.map(|t| t.as_secs_f64());
        println!(
            "run {}: save {a:.2}s vs {b:.2}s ({:.2}), restore {c:.2}s vs {d:.2}s ({:.2})",
            run + 1,
            a / b,
            c / d
        );
    }
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64 / (1 << 20) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let [Some(ours_pack), Some(their_pack), Some(ours_restore), Some(their_restore)] = best else {
        panic!("BENCH_CACHE_RUNS must be at least 1");
    };
    println!(
        "{} files and links, {} MiB; {cores} cores; best of {runs} runs",
        entry.0,
        entry.1 >> 20
    );
    println!(
        "save     buildagent pack:        {:>6.2}s  {:>5.1} CPU s  {:>6.0} MiB entry  peak RSS {:.0} MiB",
        ours_pack.0.as_secs_f64(),
        ours_pack.1,
        size(&our_entry),
        rss[0]
    );
    println!(
        "         tar -c | zstd -3:       {:>6.2}s  {:>5.1} CPU s  {:>6.0} MiB entry",
        their_pack.0.as_secs_f64(),
        their_pack.1,
        size(&their_entry)
    );
    println!(
        "restore  buildagent verify+unpack: {:>4.2}s  {:>5.1} CPU s  (verify {verify:.2}s)  peak RSS {:.0} MiB",
        ours_restore.0.as_secs_f64(),
        ours_restore.1,
        rss[1]
    );
    println!(
        "         zstd -d | tar -x:       {:>6.2}s  {:>5.1} CPU s",
        their_restore.0.as_secs_f64(),
        their_restore.1
    );
    println!(
        "ratio: save {:.2}, restore {:.2} of the baseline's time (target <= 1.00, peak RSS < 128 MiB)",
        ours_pack.0.as_secs_f64() / their_pack.0.as_secs_f64(),
        ours_restore.0.as_secs_f64() / their_restore.0.as_secs_f64()
    );
}
