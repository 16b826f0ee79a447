//! Speed of the daemonless image engine against the usual tools, measured in one process so both
//! sides see the same machine load. Prints figures and ratios:
//!
//! - layer: a 1 GiB directory of mixed files (text, random bytes, small files) written as a gzip
//!   layer with both digests ([`write_layer`]) against `tar -c DIR | gzip -1 | sha256sum`, and as
//!   a zstd level 3 layer against the same baseline (and `zstd -3 -T0` for reference);
//! - push: an image of about 500 MiB (a 1000 MiB tree of the same mix, one gzip layer) from an OCI
//!   layout to the local registry against `skopeo copy` of the same layout,
//!   then the same push again (every blob already there);
//! - peak memory of this process (`VmHWM`, the kernel's high-water mark; the target is under
//!   128 MiB whatever the sizes).
//!
//! Targets: the gzip layer in at most 0.3 of the baseline's time; the push no slower than skopeo;
//! the unchanged push in milliseconds. `cargo bench -p buildagent-runner --bench oci` (needs
//! `scripts/services.sh`: the registry on `BUILDAGENT_TEST_REGISTRY`, default 127.0.0.1:45001,
//! skopeo, zstd). `BENCH_OCI_MIB` and `BENCH_OCI_PUSH_MIB` resize the inputs, `BENCH_OCI_TREE=DIR`
//! measures an existing tree instead of the generated one; the trees are made
//! under `/var/tmp` (checked first for `3 * BENCH_OCI_MIB + 2 * BENCH_OCI_PUSH_MIB` MiB free) and
//! removed at the end.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use buildagent_runner::oci::layer::write_layer;
use buildagent_runner::oci::{
    compress, AddOptions, Compression, LayerTree, Output, Session, SessionOptions, Store,
};

mod common;
use common::peak_rss_mib;

fn mib_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A tree of about `mib` MiB: half text files of 256 KiB, a quarter random 8 MiB files, a
/// quarter small files of 4-60 KiB.
fn make_tree(dir: &Path, mib: u64, seed: u64) {
    let words = [
        "build ",
        "agent ",
        "layer ",
        "image ",
        "registry ",
        "digest\n",
        "tar ",
        "gzip ",
        "manifest ",
        "config\n",
        "{\"key\": 12345}\n",
        "fn main() {}\n",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
    let total = mib << 20;
    let mut written = 0u64;
    let mut i = 0;
    while written < total / 2 {
        let sub = dir.join(format!("text/{:03}", i % 100));
        fs::create_dir_all(&sub).unwrap();
        let mut text = Vec::with_capacity(256 << 10);
        while text.len() < 256 << 10 {
            text.extend_from_slice(words[(rng.next() % words.len() as u64) as usize].as_bytes());
        }
        fs::write(sub.join(format!("f{i}.txt")), &text).unwrap();
        written += text.len() as u64;
        i += 1;
    }
    fs::create_dir_all(dir.join("bin")).unwrap();
    let mut j = 0;
    while written < total * 3 / 4 {
        let mut f = fs::File::create(dir.join(format!("bin/blob{j}.bin"))).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..8 {
            for chunk in buf.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            f.write_all(&buf).unwrap();
        }
        written += 8 << 20;
        j += 1;
    }
    let mut k = 0;
    while written < total {
        let sub = dir.join(format!("small/{:03}", k % 200));
        fs::create_dir_all(&sub).unwrap();
        let len = 4096 + (rng.next() % (56 << 10)) as usize;
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            if k % 3 == 0 {
                data.extend_from_slice(&rng.next().to_le_bytes());
            } else {
                data.extend_from_slice(
                    words[(rng.next() % words.len() as u64) as usize].as_bytes(),
                );
            }
        }
        fs::write(sub.join(format!("s{k}")), &data).unwrap();
        written += len as u64;
        k += 1;
    }
}

fn shell(script: &str) -> Duration {
    let started = Instant::now();
    let status = Command::new("sh")
        .args(["-c", script])
        .status()
        .expect("run sh");
    assert!(status.success(), "{script}");
    started.elapsed()
}

fn tree_of(dir: &Path) -> LayerTree {
    let mut tree = LayerTree::new();
    tree.add_contents(dir, "/data", &AddOptions::default(), &mut |_| true)
        .unwrap();
    tree
}

/// Starts `VmHWM` again from the current resident set (Linux's `clear_refs` 5), so each step's
/// peak is its own.
fn reset_peak_rss() {
    fs::write("/proc/self/clear_refs", "5").unwrap();
}

fn main() {
    let mib = mib_env("BENCH_OCI_MIB", 1024);
    let push_mib = mib_env("BENCH_OCI_PUSH_MIB", 1000);
    let need = 3 * mib + 2 * push_mib;
    let fs_stat = nix::sys::statvfs::statvfs("/var/tmp").unwrap();
    let free = (fs_stat.blocks_available() as u64 * fs_stat.fragment_size() as u64) >> 20;
    assert!(
        free >= need,
        "the bench needs {need} MiB free under /var/tmp, there are {free}"
    );
    let work = tempfile::Builder::new()
        .prefix("buildagent-bench-oci-")
        .tempdir_in("/var/tmp")
        .unwrap();
    // `BENCH_OCI_TREE=DIR` measures an existing tree (kept) instead of a generated one.
    let data = match std::env::var_os("BENCH_OCI_TREE") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            let data = work.path().join("data");
            eprintln!("making a {mib} MiB tree in {}", data.display());
            make_tree(&data, mib, 0);
            data
        }
    };
    // Warm the page cache for both sides.
    shell(&format!("tar -C '{}' -cf - . >/dev/null", data.display()));
    let store = Store::open(work.path().join("store")).unwrap();
    let workers = compress::workers();

    println!("layer of a {mib} MiB tree ({workers} cores)");
    let baseline = shell(&format!(
        "tar -C '{}' -cf - . | gzip -1 | sha256sum >/dev/null",
        data.display()
    ));
    println!(
        "  tar | gzip -1 | sha256sum      {:>8.2} s",
        baseline.as_secs_f64()
    );
    let started = Instant::now();
    let gz = write_layer(
        &tree_of(&data),
        &store,
        Compression::Gzip { level: 1 },
        0,
        workers,
    )
    .unwrap();
    let ours = started.elapsed();
    println!(
        "  gzip layer (both digests)      {:>8.2} s  {:.2}x of baseline  ({} MiB -> {} MiB)",
        ours.as_secs_f64(),
        ours.as_secs_f64() / baseline.as_secs_f64(),
        gz.tar_size >> 20,
        gz.size >> 20
    );
    let gzip_peak = peak_rss_mib();
    println!("  peak memory of the gzip layer   {gzip_peak:>8.1} MiB");
    reset_peak_rss();
    let zstd_baseline = shell(&format!(
        "tar -C '{}' -cf - . | zstd -q -3 -T0 | sha256sum >/dev/null",
        data.display()
    ));
    let started = Instant::now();
    let zs = write_layer(
        &tree_of(&data),
        &store,
        Compression::Zstd { level: 3 },
        0,
        workers,
    )
    .unwrap();
    let ours_zstd = started.elapsed();
    println!(
        "  zstd -3 layer (both digests)   {:>8.2} s  {:.2}x of the gzip baseline, {:.2}x of tar | zstd -3 -T0 | sha256sum ({:.2} s)  ({} MiB)",
        ours_zstd.as_secs_f64(),
        ours_zstd.as_secs_f64() / baseline.as_secs_f64(),
        ours_zstd.as_secs_f64() / zstd_baseline.as_secs_f64(),
        zstd_baseline.as_secs_f64(),
        zs.size >> 20
    );
    println!(
        "  peak memory of the zstd layer   {:>8.1} MiB",
        peak_rss_mib()
    );

    // Push: a layout holding a push_mib image, pushed by skopeo and by the session.
    let registry = std::env::var("BUILDAGENT_TEST_REGISTRY").unwrap_or("127.0.0.1:45001".into());
    let push_data = work.path().join("push-data");
    // Other bytes on every run: skopeo's blob cache would otherwise mount what an earlier run
    // pushed to another repository, and the push would measure nothing.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    make_tree(&push_data, push_mib, seed | 1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let session = Session::new(SessionOptions {
        store: work.path().join("store"),
        ..SessionOptions::default()
    })
    .unwrap();
    let layout = work.path().join("layout");
    let nonce = format!(
        "{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    runtime.block_on(async {
        let mut image = session.base("scratch").await.unwrap();
        session
            .add_layer(&mut image, tree_of(&push_data), "bench")
            .await
            .unwrap();
        session
            .output(
                &image,
                &Output::Layout {
                    dir: layout.clone(),
                    tag: Some("v1".into()),
                },
            )
            .await
            .unwrap();
    });
    let blob_mib: u64 = fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum::<u64>()
        >> 20;
    println!("push of a {blob_mib} MiB image (OCI layout -> {registry})");
    reset_peak_rss();
    let skopeo = shell(&format!(
        "skopeo copy -q --dest-tls-verify=false oci:'{}':v1 docker://{registry}/bench/skopeo-{nonce}:v1",
        layout.display()
    ));
    println!(
        "  skopeo copy                    {:>8.2} s",
        skopeo.as_secs_f64()
    );
    let (push, again) = runtime.block_on(async {
        let image = session
            .base(&format!("oci:{}:v1", layout.display()))
            .await
            .unwrap();
        let target = Output::Registry(format!("{registry}/bench/ours-{nonce}:v1"));
        let started = Instant::now();
        session.output(&image, &target).await.unwrap();
        let push = started.elapsed();
        let started = Instant::now();
        session.output(&image, &target).await.unwrap();
        (push, started.elapsed())
    });
    println!(
        "  push                           {:>8.2} s  {:.2}x of skopeo",
        push.as_secs_f64(),
        push.as_secs_f64() / skopeo.as_secs_f64()
    );
    println!(
        "  push again (unchanged)         {:>8.1} ms",
        again.as_secs_f64() * 1000.0
    );
    println!(
        "  peak memory of the pushes       {:>8.1} MiB  (target for every step: under 128 MiB)",
        peak_rss_mib()
    );
}
