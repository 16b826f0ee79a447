//! Any bytes as an image layer blob (tar, gzip or zstd tar: the first byte picks how the input
//! is wrapped) read for its entries by the daemonless engine: no panic, and every entry's path is
//! normalised (relative, no `.` or `..` segments).

#![no_main]

use std::io::Write;

use buildagent_runner::oci::lower::layer_entries;
use buildagent_runner::oci::spec::Digest;
use buildagent_runner::oci::store::Store;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let blob = match pick % 3 {
        0 => body.to_vec(),
        1 => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(body).unwrap();
            gz.finish().unwrap()
        }
        _ => zstd::encode_all(body, 1).unwrap(),
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, &blob).unwrap();
    let diff_id = Digest::of(body);
    if let Ok(entries) = layer_entries(
        &store,
        &diff_id,
        &path,
        "application/vnd.oci.image.layer.v1.tar",
    ) {
        for entry in entries {
            let path = &entry.path;
            assert!(!path.starts_with('/'), "{path:?}");
            assert!(path.split('/').all(|s| s != ".." && s != "."), "{path:?}");
        }
    }
});
