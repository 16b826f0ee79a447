//! Compressing one large file on every core, in constant memory.
//!
//! The file goes through [`crate::deflate::ParallelDeflate`] (pigz's method: [`CHUNK`]-sized
//! pieces deflated on worker threads, each primed with the previous 32 KiB, joined into one
//! deflate stream). The stream goes to an anonymous temporary file wrapped as a
//! one-entry zip, which the archive then copies raw ([`zip::ZipWriter::raw_copy_file_rename`]):
//! at most a few chunks are in memory at once whatever the file's size.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use zip::{DateTime, ZipArchive, ZipWriter};

use super::ArtifactError;
use crate::deflate::ParallelDeflate;
use crate::deflate::CHUNK;

/// Appends `path` to `zip` as `name`, deflated at `level` on `workers` threads.
#[allow(clippy::too_many_arguments)]
pub fn append<W: Write + Seek>(
    zip: &mut ZipWriter<W>,
    name: &str,
    path: &Path,
    mode: u32,
    time: DateTime,
    level: u32,
    workers: usize,
    temp_dir: &Path,
    cancel: &AtomicBool,
) -> Result<(), ArtifactError> {
    let read_error = |e| ArtifactError::io("cannot read", path, e);
    let temp_error = |e| ArtifactError::io("cannot write a temporary file in", temp_dir, e);
    let mut source = File::open(path).map_err(read_error)?;
    let mut temp = tempfile::tempfile_in(temp_dir).map_err(temp_error)?;
    let header = local_header(name, time);
    temp.write_all(&header).map_err(temp_error)?;
    let mut deflate = ParallelDeflate::new(temp, level, workers);
    let mut data = vec![0u8; CHUNK];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(ArtifactError::Cancelled);
        }
        let n = match source.read(&mut data) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        deflate.write_all(&data[..n]).map_err(temp_error)?;
    }
    let (mut temp, summary) = deflate.finish().map_err(temp_error)?;
    finish(
        &mut temp,
        name,
        &header,
        summary.crc,
        summary.size,
        summary.compressed,
        mode,
        time,
    )
    .map_err(temp_error)?;
    temp.seek(SeekFrom::Start(0)).map_err(temp_error)?;
    let zip_error = |e| ArtifactError::Zip {
        path: Default::default(),
        source: Arc::new(e),
    };
    let mut archive = ZipArchive::new(BufReader::new(temp)).map_err(zip_error)?;
    let file = archive.by_index_raw(0).map_err(zip_error)?;
    zip.raw_copy_file_rename(file, name).map_err(zip_error)
}

const ZIP64_VERSION: u16 = 45;
const UTF8_FLAG: u16 = 1 << 11;
const DEFLATED: u16 = 8;

/// The local header with placeholders for the CRC and the (ZIP64) sizes.
fn local_header(name: &str, time: DateTime) -> Vec<u8> {
    let mut h = Vec::with_capacity(50 + name.len());
    h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    h.extend_from_slice(&ZIP64_VERSION.to_le_bytes());
    h.extend_from_slice(&UTF8_FLAG.to_le_bytes());
    h.extend_from_slice(&DEFLATED.to_le_bytes());
    h.extend_from_slice(&time.timepart().to_le_bytes());
    h.extend_from_slice(&time.datepart().to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // CRC-32, patched
    h.extend_from_slice(&u32::MAX.to_le_bytes()); // sizes in the ZIP64 field
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h.extend_from_slice(&(name.len() as u16).to_le_bytes());
    h.extend_from_slice(&20u16.to_le_bytes());
    h.extend_from_slice(name.as_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // ZIP64 extended information
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes()); // uncompressed size, patched
    h.extend_from_slice(&0u64.to_le_bytes()); // compressed size, patched
    h
}

/// Patches the local header and writes the central directory and the (ZIP64) end records.
#[allow(clippy::too_many_arguments)]
fn finish(
    temp: &mut File,
    name: &str,
    header: &[u8],
    crc: u32,
    size: u64,
    compressed: u64,
    mode: u32,
    time: DateTime,
) -> io::Result<()> {
    let central_start = header.len() as u64 + compressed;
    let mut c = Vec::with_capacity(200 + name.len());
    c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    c.extend_from_slice(&((3u16 << 8) | ZIP64_VERSION).to_le_bytes()); // made by Unix
    c.extend_from_slice(&ZIP64_VERSION.to_le_bytes());
    c.extend_from_slice(&UTF8_FLAG.to_le_bytes());
    c.extend_from_slice(&DEFLATED.to_le_bytes());
    c.extend_from_slice(&time.timepart().to_le_bytes());
    c.extend_from_slice(&time.datepart().to_le_bytes());
    c.extend_from_slice(&crc.to_le_bytes());
    c.extend_from_slice(&u32::MAX.to_le_bytes());
    c.extend_from_slice(&u32::MAX.to_le_bytes());
    c.extend_from_slice(&(name.len() as u16).to_le_bytes());
    c.extend_from_slice(&20u16.to_le_bytes());
    c.extend_from_slice(&0u16.to_le_bytes()); // comment
    c.extend_from_slice(&0u16.to_le_bytes()); // disk
    c.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
    c.extend_from_slice(&((0o100000 | mode) << 16).to_le_bytes());
    c.extend_from_slice(&0u32.to_le_bytes()); // the local header is at 0
    c.extend_from_slice(name.as_bytes());
    c.extend_from_slice(&1u16.to_le_bytes());
    c.extend_from_slice(&16u16.to_le_bytes());
    c.extend_from_slice(&size.to_le_bytes());
    c.extend_from_slice(&compressed.to_le_bytes());
    let central_size = c.len() as u64;
    let zip64_end = central_start + central_size;
    // ZIP64 end of central directory record and locator.
    c.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
    c.extend_from_slice(&44u64.to_le_bytes());
    c.extend_from_slice(&((3u16 << 8) | ZIP64_VERSION).to_le_bytes());
    c.extend_from_slice(&ZIP64_VERSION.to_le_bytes());
    c.extend_from_slice(&0u32.to_le_bytes());
    c.extend_from_slice(&0u32.to_le_bytes());
    c.extend_from_slice(&1u64.to_le_bytes());
    c.extend_from_slice(&1u64.to_le_bytes());
    c.extend_from_slice(&central_size.to_le_bytes());
    c.extend_from_slice(&central_start.to_le_bytes());
    c.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
    c.extend_from_slice(&0u32.to_le_bytes());
    c.extend_from_slice(&zip64_end.to_le_bytes());
    c.extend_from_slice(&1u32.to_le_bytes());
    // End of central directory, pointing to the ZIP64 records.
    c.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    c.extend_from_slice(&0u16.to_le_bytes());
    c.extend_from_slice(&0u16.to_le_bytes());
    c.extend_from_slice(&1u16.to_le_bytes());
    c.extend_from_slice(&1u16.to_le_bytes());
    c.extend_from_slice(&(central_size.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    c.extend_from_slice(&u32::MAX.to_le_bytes());
    c.extend_from_slice(&0u16.to_le_bytes());
    temp.write_all(&c)?;
    // Patch the local header: CRC-32 at 14, the ZIP64 sizes after the name and field header.
    temp.seek(SeekFrom::Start(14))?;
    temp.write_all(&crc.to_le_bytes())?;
    temp.seek(SeekFrom::Start(30 + name.len() as u64 + 4))?;
    temp.write_all(&size.to_le_bytes())?;
    temp.write_all(&compressed.to_le_bytes())?;
    temp.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn text(len: usize) -> Vec<u8> {
        let words = ["alpha ", "beta ", "gamma\n", "delta ", "epsilon ", "zeta\n"];
        let mut out = Vec::with_capacity(len + 16);
        let mut i = 0usize;
        while out.len() < len {
            out.extend_from_slice(words[(i * 7 + i / 13) % words.len()].as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    /// Zips `data` through [`append`] and returns the archive file.
    fn zipped(dir: &Path, data: &[u8], mode: u32) -> File {
        let path = dir.join("input");
        std::fs::write(&path, data).unwrap();
        let out = tempfile::tempfile_in(dir).unwrap();
        let mut zip = ZipWriter::new(out);
        append(
            &mut zip,
            "dir/big.txt",
            &path,
            mode,
            DateTime::default(),
            6,
            3,
            dir,
            &AtomicBool::new(false),
        )
        .unwrap();
        zip.finish().unwrap()
    }

    #[test]
    fn pieces_join_into_one_stream_for_every_size() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK,
            3 * CHUNK + 12_345,
        ] {
            let data = text(len);
            let file = zipped(dir.path(), &data, 0o640);
            let mut archive = ZipArchive::new(file).unwrap();
            let mut entry = archive.by_name("dir/big.txt").unwrap();
            assert_eq!(entry.size(), len as u64);
            assert_eq!(entry.unix_mode(), Some(0o100640));
            let mut back = Vec::new();
            entry.read_to_end(&mut back).unwrap(); // checks the CRC too
            assert!(back == data, "length {len}");
        }
    }

    #[test]
    fn priming_with_the_previous_piece_keeps_the_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let data = text(4 * CHUNK);
        let file = zipped(dir.path(), &data, 0o644);
        let chunked = ZipArchive::new(file)
            .unwrap()
            .by_index(0)
            .unwrap()
            .compressed_size();
        let mut serial =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        serial.write_all(&data).unwrap();
        let serial = serial.finish().unwrap().len() as u64;
        assert!(chunked <= serial + serial / 50, "{chunked} vs {serial}");
    }

    #[test]
    fn the_temporary_file_is_gone_and_unzip_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let data = text(2 * CHUNK + 7);
        let mut file = zipped(dir.path(), &data, 0o755);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["input"]);
        let path = dir.path().join("out.zip");
        file.seek(SeekFrom::Start(0)).unwrap();
        io::copy(&mut file, &mut File::create(&path).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        if let Ok(test) = std::process::Command::new("unzip")
            .arg("-tq")
            .arg(&path)
            .output()
        {
            assert!(
                test.status.success(),
                "{}",
                String::from_utf8_lossy(&test.stdout)
            );
        }
    }
}
