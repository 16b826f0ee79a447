//! Writing an artifact as a zip file: deterministic, parallel, in constant memory.
//!
//! Entries are written in the order given (collection sorts them by name), every timestamp is
//! 1980-01-01 00:00 (the zip epoch) and each file keeps its Unix mode, so two builds of the same
//! tree give byte-identical zips.
//!
//! Files smaller than [`PARALLEL_LIMIT`] are deflated on worker threads (one per core) into memory
//! and appended in order by the writing thread; at most [`WINDOW_BYTES`] of such files are in
//! flight at once. Larger files are split into 1 MiB pieces deflated on every core and joined into
//! one stream through a temporary file in the artifacts directory (see `chunked.rs`), so memory
//! stays bounded whatever the file sizes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use zip::write::{SimpleFileOptions, ZipFileBuilder};
use zip::{CompressionMethod, DateTime, PreparedZipFile, ZipWriter};

use super::{ArtifactError, Entry, EntryKind};

/// Files below this size are compressed on worker threads, in memory.
pub const PARALLEL_LIMIT: u64 = 8 << 20;
/// At most this many bytes of files are being compressed ahead of the writer.
pub const WINDOW_BYTES: u64 = 96 << 20;
/// At most this many files are being compressed ahead of the writer.
const WINDOW_FILES: usize = 512;
/// The deflate level (the `zip` tool's default).
const LEVEL: i64 = 6;

fn options(mode: u32, size: u64, mtime: Option<SystemTime>) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(LEVEL))
        .last_modified_time(dos_time(mtime))
        .unix_permissions(mode)
        .large_file(size >= u64::from(u32::MAX))
}

/// The zip (MS-DOS) time of `mtime`, in UTC, to the even second below; 1980-01-01 00:00 for `None`
/// and for times a zip cannot hold (before 1980, after 2107).
fn dos_time(mtime: Option<SystemTime>) -> DateTime {
    let Some(t) = mtime.map(crate::utc::utc) else {
        return DateTime::default();
    };
    let Ok(year) = u16::try_from(t.year()) else {
        return DateTime::default();
    };
    DateTime::from_date_and_time(
        year,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    )
    .unwrap_or_default()
}

fn zip_error(e: zip::result::ZipError) -> ArtifactError {
    ArtifactError::Zip {
        path: Default::default(),
        source: Arc::new(e),
    }
}

/// Writes `entries` as a zip archive to `out`. Stops with [`ArtifactError::Cancelled`] as soon as
/// `cancel` is set (the caller removes the file).
pub fn write_zip(
    entries: &[Entry],
    out: File,
    temp_dir: &std::path::Path,
    cancel: &AtomicBool,
) -> Result<(), ArtifactError> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    std::thread::scope(|scope| {
        let (job_tx, job_rx) = mpsc::channel::<usize>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..workers {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            scope.spawn(move || loop {
                let next = job_rx.lock().map(|rx| rx.recv());
                let Ok(Ok(index)) = next else { break };
                let result = if cancel.load(Ordering::Relaxed) {
                    Err(ArtifactError::Cancelled)
                } else {
                    prepare(&entries[index])
                };
                if done_tx.send((index, result)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        // `job_tx` is moved in and dropped when writing ends (success or not), which lets the
        // workers finish before the scope joins them.
        write_entries(entries, out, temp_dir, workers, cancel, job_tx, done_rx)
    })
}

type Prepared = Result<PreparedZipFile, ArtifactError>;

fn is_parallel(entry: &Entry) -> Option<u64> {
    match entry.kind {
        EntryKind::File { size, .. } if size < PARALLEL_LIMIT => Some(size),
        _ => None,
    }
}

fn write_entries(
    entries: &[Entry],
    out: File,
    temp_dir: &std::path::Path,
    workers: usize,
    cancel: &AtomicBool,
    jobs: mpsc::Sender<usize>,
    done: mpsc::Receiver<(usize, Prepared)>,
) -> Result<(), ArtifactError> {
    let mut zip = ZipWriter::new(BufWriter::with_capacity(1 << 20, out));
    let mut ready: HashMap<usize, PreparedZipFile> = HashMap::new();
    let mut next = 0;
    let mut ahead_bytes = 0u64;
    for (index, entry) in entries.iter().enumerate() {
        // Keep the workers busy with the files after this one, within the window.
        while next < entries.len()
            && next < index + WINDOW_FILES
            && (ahead_bytes < WINDOW_BYTES || next <= index)
        {
            if let Some(size) = is_parallel(&entries[next]) {
                ahead_bytes += size;
                // A send fails only when every worker is gone, which `recv` below reports.
                let _ = jobs.send(next);
            }
            next += 1;
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(ArtifactError::Cancelled);
        }
        match &entry.kind {
            EntryKind::Symlink { target } => {
                let options = SimpleFileOptions::default()
                    .last_modified_time(dos_time(entry.mtime))
                    .unix_permissions(0o777);
                zip.add_symlink(&entry.name, target.to_string_lossy(), options)
                    .map_err(zip_error)?;
            }
            EntryKind::File { size, .. } if is_parallel(entry).is_some() => {
                let prepared = loop {
                    if let Some(p) = ready.remove(&index) {
                        break p;
                    }
                    let (i, result) = done.recv().map_err(|_| {
                        ArtifactError::io(
                            "cannot compress",
                            &entry.path,
                            io::Error::other("the compression threads ended"),
                        )
                    })?;
                    ready.insert(i, result?);
                };
                ahead_bytes -= size;
                zip.add_prepared_file(prepared).map_err(zip_error)?;
            }
            EntryKind::File { mode, .. } => super::chunked::append(
                &mut zip,
                &entry.name,
                &entry.path,
                *mode,
                dos_time(entry.mtime),
                LEVEL as u32,
                workers,
                temp_dir,
                cancel,
            )?,
        }
    }
    drop(jobs);
    let mut out = zip.finish().map_err(zip_error)?;
    out.flush()
        .map_err(|e| ArtifactError::io("cannot write", "the artifact", e))?;
    Ok(())
}

/// Compresses one small file into memory.
fn prepare(entry: &Entry) -> Prepared {
    let EntryKind::File { mode, size } = entry.kind else {
        unreachable!("only files are prepared");
    };
    let mut file =
        File::open(&entry.path).map_err(|e| ArtifactError::io("cannot read", &entry.path, e))?;
    let mut builder = ZipFileBuilder::new(entry.name.as_str(), options(mode, size, entry.mtime))
        .map_err(zip_error)?;
    io::copy(&mut file, &mut builder)
        .map_err(|e| ArtifactError::io("cannot read", &entry.path, e))?;
    builder.finish().map_err(zip_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entry(dir: &std::path::Path, name: &str, contents: &[u8], mode: u32) -> Entry {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name.replace('/', "_"));
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        Entry {
            name: name.to_string(),
            path,
            kind: EntryKind::File {
                mode,
                size: contents.len() as u64,
            },
            mtime: None,
        }
    }

    #[test]
    fn small_and_streamed_files_and_links_round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..PARALLEL_LIMIT + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        let entries = vec![
            entry(dir.path(), "a.txt", b"alpha", 0o644),
            entry(dir.path(), "b/big.bin", &big, 0o600),
            Entry {
                name: "c-link".into(),
                path: dir.path().join("c-link"),
                kind: EntryKind::Symlink {
                    target: "a.txt".into(),
                },
                mtime: None,
            },
            entry(dir.path(), "d/run.sh", b"#!/bin/sh\n", 0o755),
        ];
        let out = tempfile::tempfile().unwrap();
        write_zip(
            &entries,
            out.try_clone().unwrap(),
            dir.path(),
            &AtomicBool::new(false),
        )
        .unwrap();
        let mut archive = zip::ZipArchive::new(out).unwrap();
        let names: Vec<String> = (0..archive.len())
            .map(|i| archive.by_index(i).unwrap().name().unwrap().into_owned())
            .collect();
        assert_eq!(names, ["a.txt", "b/big.bin", "c-link", "d/run.sh"]);
        let mut big_back = Vec::new();
        archive
            .by_name("b/big.bin")
            .unwrap()
            .read_to_end(&mut big_back)
            .unwrap();
        assert!(big_back == big);
        assert_eq!(
            archive.by_name("d/run.sh").unwrap().unix_mode(),
            Some(0o100755)
        );
        let link = archive.by_name("c-link").unwrap();
        assert!(link.is_symlink());
    }

    #[test]
    fn dos_times_are_utc_and_clamped() {
        let at = |secs: u64| {
            dos_time(Some(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            ))
        };
        // 2025-03-08 23:02:07 UTC: DOS time keeps even seconds.
        let t = at(1_741_474_927);
        assert_eq!(
            (
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            (2025, 3, 8, 23, 2, 6)
        );
        assert_eq!(at(0), DateTime::default());
        assert_eq!(dos_time(None), DateTime::default());
    }

    #[test]
    fn a_cancelled_write_stops() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![entry(dir.path(), "a.txt", b"alpha", 0o644)];
        let out = tempfile::tempfile().unwrap();
        let err = write_zip(&entries, out, dir.path(), &AtomicBool::new(true)).unwrap_err();
        assert!(matches!(err, ArtifactError::Cancelled));
    }
}
