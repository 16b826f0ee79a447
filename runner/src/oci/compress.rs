//! Layer compression on every core, in constant memory.
//!
//! gzip: the stream is cut into [`CHUNK`]-sized pieces at fixed offsets; each piece is deflated
//! on a worker thread with the previous 32 KiB as its dictionary and ends with a sync flush (the
//! last one with the final block), and a collector thread writes the pieces in order between a
//! gzip header and trailer (pigz's method, as the artifact zips do). The pieces depend only on
//! the offsets, never on the number of threads, so the output is the same bytes on any machine.
//!
//! zstd: libzstd's own multi-threaded mode, whose output depends only on the level (never on the
//! number of workers, as long as there is at least one).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, FlushCompress, Status};

use super::spec::media;

/// The size of the pieces deflated in parallel.
pub const CHUNK: usize = 1 << 20;
/// Deflate's window: how much of the previous piece primes the next one.
const DICT: usize = 32 * 1024;

/// How layers are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip at a deflate level (1 fastest, 9 smallest).
    Gzip {
        /// The level, 1 to 9.
        level: u32,
    },
    /// zstd at a level (1 to 19; 3 is zstd's default).
    Zstd {
        /// The level.
        level: i32,
    },
}

impl Default for Compression {
    /// gzip level 1: every registry and engine reads gzip, and level 1 is several times faster
    /// than 6 for a few percent more bytes (crane's and ko's choice too).
    fn default() -> Self {
        Compression::Gzip { level: 1 }
    }
}

impl Compression {
    /// The OCI media type of a layer compressed so.
    pub fn oci_media_type(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => media::OCI_LAYER_GZIP,
            Compression::Zstd { .. } => media::OCI_LAYER_ZSTD,
        }
    }
}

/// The number of compression threads: one per core.
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// A writer that compresses into `W` with [`Compression`]; [`Compressor::finish`] ends the
/// stream and returns `W`.
pub enum Compressor<W: Write + Send + 'static> {
    /// Parallel gzip.
    Gzip(ParallelGzip<W>),
    /// Multi-threaded zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write + Send + 'static> Compressor<W> {
    /// Starts compressing into `out` on `workers` threads.
    pub fn new(out: W, compression: Compression, workers: usize) -> io::Result<Self> {
        let workers = workers.max(1);
        Ok(match compression {
            Compression::Gzip { level } => {
                Compressor::Gzip(ParallelGzip::new(out, level.clamp(1, 9), workers))
            }
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(out, level)?;
                enc.multithread(workers as u32)?;
                enc.include_checksum(false)?;
                enc.include_contentsize(false)?;
                Compressor::Zstd(enc)
            }
        })
    }

    /// Ends the stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write + Send + 'static> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Job {
    index: usize,
    dictionary: Vec<u8>,
    data: Vec<u8>,
    last: bool,
}

type Done = (usize, bool, io::Result<Vec<u8>>);

/// pigz-style gzip on worker threads (see the module documentation).
pub struct ParallelGzip<W: Write + Send + 'static> {
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    tail: Vec<u8>,
    index: usize,
    jobs: Option<SyncSender<Job>>,
    permits: Receiver<()>,
    threads: Vec<JoinHandle<()>>,
    collector: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ParallelGzip<W> {
    /// Starts the threads; `out` gets the gzip header at once.
    pub fn new(out: W, level: u32, workers: usize) -> Self {
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(workers);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let mut threads = Vec::new();
        for _ in 0..workers {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            threads.push(std::thread::spawn(move || loop {
                let next = job_rx.lock().map(|rx| rx.recv());
                let Ok(Ok(job)) = next else { break };
                let out = deflate(&job, level);
                if done_tx.send((job.index, job.last, out)).is_err() {
                    break;
                }
            }));
        }
        drop(done_tx);
        let in_flight = 2 * workers + 2;
        let (permit_tx, permits) = mpsc::sync_channel::<()>(in_flight);
        for _ in 0..in_flight {
            let _ = permit_tx.send(());
        }
        let collector = std::thread::spawn(move || collect(out, done_rx, permit_tx));
        ParallelGzip {
            buf: Vec::with_capacity(CHUNK),
            crc: crc32fast::Hasher::new(),
            total: 0,
            tail: Vec::new(),
            index: 0,
            jobs: Some(jobs),
            permits,
            threads,
            collector: Some(collector),
        }
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let dictionary = std::mem::take(&mut self.tail);
        self.tail = data[data.len().saturating_sub(DICT)..].to_vec();
        if self.permits.recv().is_err() {
            return Err(self.collector_error());
        }
        let job = Job {
            index: self.index,
            dictionary,
            data,
            last,
        };
        self.index += 1;
        let sent = self.jobs.as_ref().map(|j| j.send(job).is_ok());
        if sent != Some(true) {
            return Err(self.collector_error());
        }
        Ok(())
    }

    /// The collector's error after it stopped early.
    fn collector_error(&mut self) -> io::Error {
        self.jobs = None;
        match self.collector.take().map(|c| c.join()) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("the compression threads ended"),
        }
    }

    /// Compresses what is left, writes the trailer and returns `W`.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut out = match self.collector.take().map(|c| c.join()) {
            Some(Ok(result)) => result?,
            _ => return Err(io::Error::other("the compression threads ended")),
        };
        let crc = std::mem::take(&mut self.crc).finalize();
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&(self.total as u32).to_le_bytes())?;
        Ok(out)
    }
}

impl<W: Write + Send + 'static> Write for ParallelGzip<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        self.crc.update(data);
        self.total += n as u64;
        while !data.is_empty() {
            let room = CHUNK - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK {
                self.dispatch(false)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Writes the header, then each piece in order, returning a permit per piece written.
fn collect<W: Write>(mut out: W, done: Receiver<Done>, permits: SyncSender<()>) -> io::Result<W> {
    // gzip header: deflate, no flags, no time, no extra flags, OS unknown.
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
    let mut ready: BTreeMap<usize, (bool, Vec<u8>)> = BTreeMap::new();
    let mut next = 0;
    loop {
        while let Some((last, bytes)) = ready.remove(&next) {
            out.write_all(&bytes)?;
            next += 1;
            let _ = permits.send(());
            if last {
                return Ok(out);
            }
        }
        let (i, last, result) = done
            .recv()
            .map_err(|_| io::Error::other("the compression threads ended"))?;
        ready.insert(i, (last, result?));
    }
}

/// Deflates one piece (raw deflate): a sync flush at its end, or the final block when `last`.
fn deflate(job: &Job, level: u32) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !job.dictionary.is_empty() {
        c.set_dictionary(&job.dictionary)
            .map_err(io::Error::other)?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(job.data.len() / 2 + 1024);
    let mut consumed = 0;
    loop {
        if out.capacity() - out.len() < 16 * 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let before = c.total_in();
        let status = c
            .compress_vec(&job.data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        consumed += (c.total_in() - before) as usize;
        let room_left = out.len() < out.capacity();
        match (job.last, status) {
            (true, Status::StreamEnd) => return Ok(out),
            (false, _) if consumed == job.data.len() && room_left => return Ok(out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn data(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut x = 12345u64;
        while out.len() < len {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Half text, half noise.
            if (out.len() / 5000) % 2 == 0 {
                out.extend_from_slice(b"layer text line\n");
            } else {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }

    fn compress(input: &[u8], compression: Compression, workers: usize) -> Vec<u8> {
        let mut c = Compressor::new(Vec::new(), compression, workers).unwrap();
        for piece in input.chunks(7777) {
            c.write_all(piece).unwrap();
        }
        c.finish().unwrap()
    }

    #[test]
    fn gzip_is_the_same_for_any_number_of_threads_and_decodes() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 4321] {
            let input = data(len);
            let one = compress(&input, Compression::Gzip { level: 1 }, 1);
            let three = compress(&input, Compression::Gzip { level: 1 }, 3);
            assert!(one == three, "length {len}");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == input, "length {len}");
        }
    }

    #[test]
    fn zstd_is_the_same_for_any_number_of_threads_and_decodes() {
        let input = data(5 * CHUNK + 99);
        let one = compress(&input, Compression::Zstd { level: 3 }, 1);
        let four = compress(&input, Compression::Zstd { level: 3 }, 4);
        assert!(one == four);
        let back = zstd::stream::decode_all(&one[..]).unwrap();
        assert!(back == input);
    }
}
