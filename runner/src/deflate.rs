//! One deflate stream compressed on every core, in constant memory (pigz's method), for the
//! large files of artifact zips and for gzip OCI layers.
//!
//! What is written is cut into [`CHUNK`]-sized pieces at fixed offsets; each piece is deflated
//! on a worker thread with the previous 32 KiB as its dictionary and ends with a sync flush (the
//! last one with the final block), and a collector thread writes the pieces in order. The pieces,
//! concatenated, are one raw deflate stream that compresses about as well as a serial one, and
//! they depend only on the offsets, never on the number of threads: the output is the same bytes
//! on any machine. Each worker also takes its piece's CRC-32 (combined in order by the
//! collector), so the writing thread only copies bytes in.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// The size of the pieces deflated in parallel.
pub const CHUNK: usize = 1 << 20;
/// Deflate's window: how much of the previous piece primes the next one.
const DICT: usize = 32 * 1024;

/// What a finished stream held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The CRC-32 of the uncompressed bytes.
    pub crc: u32,
    /// The number of uncompressed bytes.
    pub size: u64,
    /// The number of compressed bytes written.
    pub compressed: u64,
}

struct Job {
    index: usize,
    dictionary: Vec<u8>,
    data: Vec<u8>,
    last: bool,
}

struct Piece {
    index: usize,
    last: bool,
    crc: crc32fast::Hasher,
    bytes: io::Result<Vec<u8>>,
}

/// A writer that deflates into `W` on worker threads; [`ParallelDeflate::finish`] ends the
/// stream and returns `W` with a [`Summary`].
pub struct ParallelDeflate<W: Write + Send + 'static> {
    buf: Vec<u8>,
    tail: Vec<u8>,
    index: usize,
    jobs: Option<SyncSender<Job>>,
    permits: Receiver<()>,
    threads: Vec<JoinHandle<()>>,
    collector: Option<JoinHandle<io::Result<(W, Summary)>>>,
}

impl<W: Write + Send + 'static> ParallelDeflate<W> {
    /// Starts `workers` threads (at least one) deflating at `level` (1 to 9) into `out`.
    pub fn new(out: W, level: u32, workers: usize) -> Self {
        let workers = workers.max(1);
        let level = level.clamp(1, 9);
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(workers);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<Piece>();
        let mut threads = Vec::new();
        for _ in 0..workers {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            threads.push(std::thread::spawn(move || loop {
                let next = job_rx.lock().map(|rx| rx.recv());
                let Ok(Ok(job)) = next else { break };
                let mut crc = crc32fast::Hasher::new();
                crc.update(&job.data);
                let piece = Piece {
                    index: job.index,
                    last: job.last,
                    crc,
                    bytes: deflate(&job, level),
                };
                if done_tx.send(piece).is_err() {
                    break;
                }
            }));
        }
        drop(done_tx);
        // Pieces read but not yet written: the memory bound.
        let in_flight = 2 * workers + 2;
        let (permit_tx, permits) = mpsc::sync_channel::<()>(in_flight);
        for _ in 0..in_flight {
            let _ = permit_tx.send(());
        }
        let collector = std::thread::spawn(move || collect(out, done_rx, permit_tx));
        ParallelDeflate {
            buf: Vec::with_capacity(CHUNK),
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

    /// Deflates what is left, ends the stream and returns `W` and what the stream held.
    pub fn finish(mut self) -> io::Result<(W, Summary)> {
        self.dispatch(true)?;
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        match self.collector.take().map(|c| c.join()) {
            Some(Ok(result)) => result,
            _ => Err(io::Error::other("the compression threads ended")),
        }
    }
}

impl<W: Write + Send + 'static> Write for ParallelDeflate<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
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

impl<W: Write + Send + 'static> Drop for ParallelDeflate<W> {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Writes each piece in order, returning a permit per piece written.
fn collect<W: Write>(
    mut out: W,
    done: Receiver<Piece>,
    permits: SyncSender<()>,
) -> io::Result<(W, Summary)> {
    let mut ready: BTreeMap<usize, Piece> = BTreeMap::new();
    let mut next = 0;
    let mut crc = crc32fast::Hasher::new();
    let mut compressed = 0u64;
    loop {
        while let Some(piece) = ready.remove(&next) {
            let bytes = piece.bytes?;
            out.write_all(&bytes)?;
            compressed += bytes.len() as u64;
            crc.combine(&piece.crc);
            next += 1;
            let _ = permits.send(());
            if piece.last {
                let size = crc.total_len();
                let summary = Summary {
                    crc: crc.finalize(),
                    size,
                    compressed,
                };
                return Ok((out, summary));
            }
        }
        let piece = done
            .recv()
            .map_err(|_| io::Error::other("the compression threads ended"))?;
        ready.insert(piece.index, piece);
    }
}

/// Whether `data` looks incompressible (already compressed or random): the bytes of a sample
/// spread over it are almost evenly distributed (a Shannon entropy of 7.9 bits a byte or more,
/// where text is near 5 and code near 6). Deflating such a piece costs as much CPU as any other
/// and saves nothing (level 1 even adds a little), so it is stored instead, as zstd and btrfs
/// do; the choice depends only on the bytes, so the output stays the same on every machine.
fn incompressible(data: &[u8]) -> bool {
    const SLICES: usize = 32;
    const SLICE: usize = 2048;
    if data.len() < SLICES * SLICE * 2 {
        return false;
    }
    let mut counts = [0u32; 256];
    let step = data.len() / SLICES;
    for i in 0..SLICES {
        for &b in &data[i * step..i * step + SLICE] {
            counts[b as usize] += 1;
        }
    }
    let total = (SLICES * SLICE) as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / total;
            -p * p.log2()
        })
        .sum();
    entropy >= 7.9
}

/// Deflates one piece (raw deflate): a sync flush at its end, or the final block when `last`;
/// stored blocks when it is [`incompressible`].
fn deflate(job: &Job, level: u32) -> io::Result<Vec<u8>> {
    let level = if incompressible(&job.data) { 0 } else { level };
    let mut c = Compress::new(Compression::new(level), false);
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
pub(crate) mod tests {
    use super::*;
    use std::io::Read;

    /// `len` bytes of test input: runs of text and of noise, 5000 bytes each (also used by the
    /// layer compressor's tests).
    pub(crate) fn data(len: usize) -> Vec<u8> {
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

    fn deflated(input: &[u8], workers: usize) -> (Vec<u8>, Summary) {
        let mut d = ParallelDeflate::new(Vec::new(), 1, workers);
        for piece in input.chunks(7777) {
            d.write_all(piece).unwrap();
        }
        d.finish().unwrap()
    }

    #[test]
    fn random_pieces_are_stored_and_text_is_deflated() {
        let mut x = 99u64;
        let noise: Vec<u8> = (0..CHUNK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(incompressible(&noise));
        let text = b"fn main() { println!(\"layer\"); }\n".repeat(CHUNK / 32);
        assert!(!incompressible(&text));
        let mut both = noise.clone();
        both.extend_from_slice(&text);
        let (out, summary) = deflated(&both, 2);
        // Stored blocks cost 5 bytes in 65,535; the text shrinks to almost nothing.
        assert!(out.len() < noise.len() + noise.len() / 1000 + text.len() / 20);
        assert_eq!(summary.crc, crc32fast::hash(&both));
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == both);
    }

    #[test]
    fn the_stream_is_the_same_for_any_number_of_threads_and_inflates() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 4321] {
            let input = data(len);
            let (one, summary) = deflated(&input, 1);
            let (three, _) = deflated(&input, 3);
            assert!(one == three, "length {len}");
            assert_eq!(summary.size, len as u64);
            assert_eq!(summary.compressed, one.len() as u64);
            assert_eq!(summary.crc, crc32fast::hash(&input), "length {len}");
            let mut back = Vec::new();
            flate2::read::DeflateDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == input, "length {len}");
        }
    }
}
