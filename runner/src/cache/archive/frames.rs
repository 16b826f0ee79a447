//! The zstd layer of an entry: the tar stream cut into pieces of at most [`Layout::frame`] bytes,
//! each compressed as its own zstd frame (level 3, with its content size and checksum) on a pool
//! of threads, each preceded by a zstd *skippable frame* that indexes it:
//!
//! ```text
//! 5B 2A 4D 18   <size: u32>        skippable frame 0x184D2A5B, `size` bytes of payload:
//!   "BAz2"  crc32  compressed  content  headers  headers_compressed    (u32, little-endian)
//!   <the frame's tar header bytes, zstd-compressed: `headers_compressed` bytes>
//! <the zstd frame: `compressed` bytes, holding `content` bytes of the tar stream>
//! ```
//!
//! The *header copy* is every byte of the frame's content that belongs to a tar header (with
//! GNU long names and the end-of-archive blocks), in order; `crc32` (CRC-32) covers the payload
//! after it and the zstd frame. [`read`] with `skip_data` (what `verify` does) reads every frame
//! and checks its CRC-32 but decompresses only the header copies: it sees every member without
//! decompressing any file. Without `skip_data` (what `unpack` does) it decompresses every frame
//! on a pool of threads, in order, within a fixed memory budget, and the tar reader checks that
//! the headers it reads are the copies `verify` saw.
//!
//! Any zstd decoder skips the index frames, so `zstd -d | tar -x` reads an entry too. An input
//! that starts with a plain zstd frame (an entry written before the index existed) is decoded
//! serially, without copies.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::ops::Deref;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};

use super::invalid;

/// zstd's level for entries (the zstd tool's default).
const LEVEL: i32 = 3;
/// The magic of the index frames (one of zstd's skippable frame magics).
const INDEX_MAGIC: u32 = 0x184D_2A5B;
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
const TAG: &[u8; 4] = b"BAz2";
/// The fixed part of an index frame's payload.
const INDEX_LEN: usize = 24;
/// The largest frame content a reader accepts.
pub(super) const MAX_FRAME: usize = 4 << 20;

/// How an entry is cut into frames.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    /// The largest content of one frame (at most [`MAX_FRAME`]).
    pub frame: usize,
}

pub(super) const LAYOUT: Layout = Layout { frame: MAX_FRAME };

/// The most threads a pack or a restore uses for each of its pools (memory grows with them).
const MAX_THREADS: usize = 6;

/// How many threads a pool gets: one per core, at most [`MAX_THREADS`].
pub(super) fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS))
}

struct Job {
    index: u64,
    data: Vec<u8>,
    headers: Vec<u8>,
}

struct Compressed {
    index: u64,
    /// The zstd frame and the compressed header copy.
    frames: io::Result<(Vec<u8>, Vec<u8>)>,
    content: usize,
    headers: usize,
}

fn compressor() -> io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(LEVEL)?;
    c.include_checksum(true)?;
    c.include_contentsize(true)?;
    Ok(c)
}

fn compress(
    c: &mut io::Result<zstd::bulk::Compressor<'static>>,
    job: &Job,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let c = c
        .as_mut()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
    let mut frame = c.compress(&job.data)?;
    frame.shrink_to_fit();
    let headers = if job.headers.is_empty() {
        Vec::new()
    } else {
        let mut headers = c.compress(&job.headers)?;
        headers.shrink_to_fit();
        headers
    };
    Ok((frame, headers))
}

/// Writes the tar stream as indexed frames, compressing on worker threads (see [`write`]).
pub(super) struct FrameWriter<W: Write> {
    out: W,
    layout: Layout,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Compressed>,
    /// The index the next frame gets, and the next one to write out.
    next: u64,
    written: u64,
    ready: BTreeMap<u64, Compressed>,
    /// Frames compressed or being compressed, at most this many.
    in_flight: u64,
    /// The current frame's content and header copy.
    current: Vec<u8>,
    headers: Vec<u8>,
}

/// Runs `body` with a [`FrameWriter`] on `out` whose frames are compressed on every core, then
/// writes the last frames.
pub(super) fn write<W: Write, T>(
    out: W,
    layout: Layout,
    body: impl FnOnce(&mut FrameWriter<W>) -> io::Result<T>,
) -> io::Result<T> {
    let workers = workers();
    std::thread::scope(|scope| {
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(workers);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done) = mpsc::channel::<Compressed>();
        for _ in 0..workers {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            let thread = std::thread::Builder::new().name("cache-zstd".into());
            thread.spawn_scoped(scope, move || {
                let mut compressor = compressor();
                loop {
                    let next = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok(job)) = next else { break };
                    let done = Compressed {
                        index: job.index,
                        frames: compress(&mut compressor, &job),
                        content: job.data.len(),
                        headers: job.headers.len(),
                    };
                    if done_tx.send(done).is_err() {
                        break;
                    }
                }
            })?;
        }
        drop(done_tx);
        let mut writer = FrameWriter {
            out,
            layout,
            jobs: Some(jobs),
            done,
            next: 0,
            written: 0,
            ready: BTreeMap::new(),
            in_flight: workers as u64 + 3,
            current: Vec::with_capacity(layout.frame),
            headers: Vec::new(),
        };
        let value = body(&mut writer)?;
        writer.cut()?;
        writer.jobs = None;
        writer.drain(0)?;
        writer.out.flush()?;
        Ok(value)
    })
}

impl<W: Write> FrameWriter<W> {
    /// Appends tar header bytes: a member's header (with its long-name entries) or the
    /// end-of-archive blocks. They are copied into the index too.
    pub fn header(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.append(bytes, true)
    }

    /// Appends `real` to the tar stream but `copy` (of the same length) to the index, as a
    /// forged entry would; `real` alone when `copy` is `None`.
    #[cfg(test)]
    pub fn forge(&mut self, real: &[u8], copy: Option<&[u8]>) -> io::Result<()> {
        if let Some(copy) = copy {
            assert_eq!(real.len(), copy.len());
            assert!(self.current.len() + real.len() < self.layout.frame);
            self.headers.extend_from_slice(copy);
        }
        self.append(real, false)
    }

    fn append(&mut self, mut bytes: &[u8], header: bool) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = self.layout.frame - self.current.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.current.extend_from_slice(now);
            if header {
                self.headers.extend_from_slice(now);
            }
            bytes = rest;
            if self.current.len() == self.layout.frame {
                self.cut()?;
            }
        }
        Ok(())
    }

    /// Appends `len` bytes of file data from `file`, then `pad` zeros (to the next 512-byte
    /// block). Fails if `file` ends early.
    pub fn file(&mut self, file: &mut impl Read, len: u64, pad: usize) -> io::Result<()> {
        let mut left = len;
        while left > 0 {
            let room = (self.layout.frame - self.current.len()) as u64;
            let want = room.min(left);
            let got = file.by_ref().take(want).read_to_end(&mut self.current)?;
            if (got as u64) < want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file became shorter while it was read",
                ));
            }
            left -= want;
            if self.current.len() == self.layout.frame {
                self.cut()?;
            }
        }
        self.append(&[0u8; 512][..pad], false)
    }

    /// Ends the current frame and hands it to a worker.
    fn cut(&mut self) -> io::Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        let job = Job {
            index: self.next,
            data: std::mem::replace(&mut self.current, Vec::with_capacity(self.layout.frame)),
            headers: std::mem::take(&mut self.headers),
        };
        self.next += 1;
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        if !matches!(sent, Some(Ok(()))) {
            return Err(io::Error::other("the compression threads stopped"));
        }
        self.drain(self.in_flight)
    }

    /// Writes the frames that are done, in order, until at most `keep` are still pending.
    fn drain(&mut self, keep: u64) -> io::Result<()> {
        loop {
            while let Ok(done) = self.done.try_recv() {
                self.ready.insert(done.index, done);
            }
            while let Some(done) = self.ready.remove(&self.written) {
                self.emit(done)?;
                self.written += 1;
            }
            if self.next - self.written <= keep {
                return Ok(());
            }
            match self.done.recv() {
                Ok(done) => {
                    self.ready.insert(done.index, done);
                }
                Err(_) => return Err(io::Error::other("the compression threads stopped")),
            }
        }
    }

    fn emit(&mut self, done: Compressed) -> io::Result<()> {
        let (frame, headers) = done.frames?;
        let mut index = Vec::with_capacity(8 + INDEX_LEN + headers.len());
        index.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
        index.extend_from_slice(&((INDEX_LEN + headers.len()) as u32).to_le_bytes());
        index.extend_from_slice(TAG);
        index.extend_from_slice(&[0; 4]);
        for field in [frame.len(), done.content, done.headers, headers.len()] {
            index.extend_from_slice(&(field as u32).to_le_bytes());
        }
        index.extend_from_slice(&headers);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&index[16..]);
        crc.update(&frame);
        index[12..16].copy_from_slice(&crc.finalize().to_le_bytes());
        self.out.write_all(&index)?;
        self.out.write_all(&frame)
    }
}

/// How many decoded frames may exist at once (in flight, waiting in order, or held by pending
/// writes), counted with [`Ticket`]s; and the buffers of the frames done with, used again (fresh
/// memory costs page faults, and decompressing into it is slower).
pub(super) struct Budget {
    free: Mutex<usize>,
    freed: Condvar,
    spare: Mutex<Vec<Vec<u8>>>,
    size: usize,
}

/// One unit of a [`Budget`], given back when dropped.
pub(super) struct Ticket(Arc<Budget>);

impl Budget {
    fn new(size: usize) -> Arc<Budget> {
        Arc::new(Budget {
            free: Mutex::new(size),
            freed: Condvar::new(),
            spare: Mutex::new(Vec::new()),
            size,
        })
    }

    /// An empty buffer, used before if one is spare.
    fn buffer(&self) -> Vec<u8> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        spare.pop().unwrap_or_default()
    }

    /// Keeps `buffer` for [`buffer`](Self::buffer) (as many as frames may exist, twice: the
    /// compressed and the decoded ones).
    fn recycle(&self, mut buffer: Vec<u8>) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < 2 * self.size && buffer.capacity() > 0 {
            buffer.clear();
            spare.push(buffer);
        }
    }

    fn try_take(self: &Arc<Self>) -> Option<Ticket> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if *free == 0 {
            return None;
        }
        *free -= 1;
        Some(Ticket(Arc::clone(self)))
    }

    fn take(self: &Arc<Self>) -> Ticket {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Ticket(Arc::clone(self))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += 1;
        self.0.freed.notify_one();
    }
}

/// Decoded bytes of the tar stream (one frame's, or a serial read's).
pub(super) struct Decoded {
    data: Vec<u8>,
    _ticket: Option<Ticket>,
}

impl Drop for Decoded {
    fn drop(&mut self) {
        if let Some(ticket) = &self._ticket {
            ticket.0.recycle(std::mem::take(&mut self.data));
        }
    }
}

impl Deref for Decoded {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

/// A piece of the tar stream: decoded bytes, or only their length.
pub(super) enum Data {
    Bytes(Arc<Decoded>),
    Skipped(u64),
}

/// The tar stream, piece by piece (frame by frame), in order.
pub(super) struct Piece {
    pub data: Data,
    /// The header copy of the piece (`None` for an entry without an index).
    pub headers: Option<Vec<u8>>,
}

/// A source of [`Piece`]s; `None` at the end of the entry.
pub(super) trait Pieces {
    fn next_piece(&mut self) -> io::Result<Option<Piece>>;
}

/// Runs `body` on the pieces of the entry in `input`: for an indexed entry, with `skip_data`
/// only the header copies are decompressed, else every frame, on a pool of threads; a plain zstd
/// stream is decompressed serially (`skip_data` or not).
pub(super) fn read<R: Read, T>(
    mut input: R,
    skip_data: bool,
    body: impl FnOnce(&mut dyn Pieces) -> io::Result<T>,
) -> io::Result<T> {
    let mut magic = [0u8; 4];
    input
        .read_exact(&mut magic)
        .map_err(|_| invalid("the entry is empty or truncated".into()))?;
    let input = io::Cursor::new(magic).chain(input);
    match u32::from_le_bytes(magic) {
        INDEX_MAGIC => {}
        ZSTD_MAGIC => {
            let mut serial = Serial(zstd::stream::read::Decoder::new(input)?);
            return body(&mut serial);
        }
        _ => return Err(invalid("the entry is not a zstd stream".into())),
    }
    let mut decompressor = zstd::bulk::Decompressor::new()?;
    if skip_data {
        let mut headers_only = HeadersOnly {
            input,
            decompressor: &mut decompressor,
            spare: Vec::new(),
        };
        return body(&mut headers_only);
    }
    let workers = workers();
    let window = workers + 2;
    std::thread::scope(|scope| {
        let (jobs, job_rx) = mpsc::sync_channel::<DecodeJob>(window);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done) = mpsc::channel::<Decode>();
        for _ in 0..workers {
            let job_rx = Arc::clone(&job_rx);
            let done_tx: Sender<_> = done_tx.clone();
            let thread = std::thread::Builder::new().name("cache-unzstd".into());
            thread.spawn_scoped(scope, move || {
                let mut decompressor = zstd::bulk::Decompressor::new();
                loop {
                    let next = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok(job)) = next else { break };
                    let index = job.index;
                    let decoded = match &mut decompressor {
                        Ok(d) => decode(d, job),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    };
                    if done_tx.send((index, decoded)).is_err() {
                        break;
                    }
                }
            })?;
        }
        drop(done_tx);
        let mut indexed = Indexed {
            input,
            jobs: Some(jobs),
            done,
            ready: HashMap::new(),
            order: VecDeque::new(),
            stash: None,
            next: 0,
            window,
            // In flight or waiting (`window`), the one being read, and a few held by writes.
            budget: Budget::new(window + 4),
            ended: false,
        };
        let value = body(&mut indexed);
        indexed.jobs = None;
        value
    })
}

/// Decompresses `compressed`, which must hold exactly `len` bytes, into `data` (emptied first).
fn unzstd(
    decompressor: &mut zstd::bulk::Decompressor<'_>,
    compressed: &[u8],
    len: usize,
    mut data: Vec<u8>,
) -> io::Result<Vec<u8>> {
    data.clear();
    data.reserve(len);
    if len > 0 || !compressed.is_empty() {
        decompressor
            .decompress_to_buffer(compressed, &mut data)
            .map_err(|e| invalid(format!("a frame of the entry is corrupt: {e}")))?;
    }
    if data.len() != len {
        return Err(invalid(format!(
            "a frame of the entry holds {} bytes instead of {len}",
            data.len()
        )));
    }
    Ok(data)
}

type Decode = (u64, io::Result<(Decoded, Vec<u8>)>);

fn decode(
    decompressor: &mut zstd::bulk::Decompressor<'_>,
    job: DecodeJob,
) -> io::Result<(Decoded, Vec<u8>)> {
    let frame = job.frame;
    let budget = &job.ticket.0;
    let data = unzstd(decompressor, &frame.frame, frame.content, budget.buffer())?;
    budget.recycle(frame.frame);
    let headers = unzstd(decompressor, &frame.headers, frame.headers_len, Vec::new())?;
    let decoded = Decoded {
        data,
        _ticket: Some(job.ticket),
    };
    Ok((decoded, headers))
}

struct Serial<R: Read>(R);

impl<R: Read> Pieces for Serial<R> {
    fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        let mut data = Vec::with_capacity(1 << 20);
        self.0.by_ref().take(1 << 20).read_to_end(&mut data)?;
        if data.is_empty() {
            return Ok(None);
        }
        let data = Arc::new(Decoded {
            data,
            _ticket: None,
        });
        Ok(Some(Piece {
            data: Data::Bytes(data),
            headers: None,
        }))
    }
}

/// One frame read from the input, its CRC-32 checked.
struct RawFrame {
    frame: Vec<u8>,
    content: usize,
    headers: Vec<u8>,
    headers_len: usize,
}

/// Reads the next frame of an indexed entry (into `buffer`); `None` at the end of the input.
fn read_frame(input: &mut impl Read, buffer: Vec<u8>) -> io::Result<Option<RawFrame>> {
    let truncated = || invalid("the entry is truncated".into());
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        match input.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got == 0 {
        return Ok(None);
    }
    if got < head.len() {
        return Err(truncated());
    }
    let word = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let size = word(&head, 4) as usize;
    let bound = zstd::zstd_safe::compress_bound(MAX_FRAME);
    if word(&head, 0) != INDEX_MAGIC || size < INDEX_LEN || size > INDEX_LEN + bound {
        return Err(invalid("a frame of the entry has no valid index".into()));
    }
    // Read into capacity: no zeroing first.
    let fill = |input: &mut dyn Read, len: usize, mut buf: Vec<u8>| {
        buf.clear();
        buf.reserve(len);
        if input.take(len as u64).read_to_end(&mut buf)? < len {
            return Err(truncated());
        }
        Ok(buf)
    };
    let mut payload = fill(input, size, Vec::new())?;
    let crc = word(&payload, 4);
    let [len, content, headers_len, headers_compressed] =
        [8, 12, 16, 20].map(|i| word(&payload, i) as usize);
    if &payload[..4] != TAG
        || headers_compressed != size - INDEX_LEN
        || content > MAX_FRAME
        || headers_len > content
        || len > bound
    {
        return Err(invalid("a frame of the entry has an invalid index".into()));
    }
    let frame = fill(input, len, buffer)?;
    let mut check = crc32fast::Hasher::new();
    check.update(&payload[8..]);
    check.update(&frame);
    if check.finalize() != crc {
        return Err(invalid("a frame of the entry is corrupt (CRC-32)".into()));
    }
    payload.drain(..INDEX_LEN);
    Ok(Some(RawFrame {
        frame,
        content,
        headers: payload,
        headers_len,
    }))
}

/// The pieces of an indexed entry without their data: every frame is read and checked, only
/// its header copy is decompressed.
struct HeadersOnly<'d, R: Read> {
    input: R,
    decompressor: &'d mut zstd::bulk::Decompressor<'static>,
    /// The buffer of the previous frame, used again.
    spare: Vec<u8>,
}

impl<R: Read> Pieces for HeadersOnly<'_, R> {
    fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        let Some(frame) = read_frame(&mut self.input, std::mem::take(&mut self.spare))? else {
            return Ok(None);
        };
        let headers = unzstd(
            self.decompressor,
            &frame.headers,
            frame.headers_len,
            Vec::new(),
        )?;
        self.spare = frame.frame;
        Ok(Some(Piece {
            data: Data::Skipped(frame.content as u64),
            headers: Some(headers),
        }))
    }
}

struct DecodeJob {
    index: u64,
    frame: RawFrame,
    ticket: Ticket,
}

struct Indexed<R: Read> {
    input: R,
    jobs: Option<SyncSender<DecodeJob>>,
    done: Receiver<Decode>,
    ready: HashMap<u64, io::Result<(Decoded, Vec<u8>)>>,
    /// The frames handed to the workers, in order.
    order: VecDeque<u64>,
    /// A frame read but not handed out yet (no ticket was free).
    stash: Option<RawFrame>,
    next: u64,
    window: usize,
    budget: Arc<Budget>,
    ended: bool,
}

impl<R: Read> Indexed<R> {
    /// Reads frames ahead and hands them to the workers, within the window and the budget.
    fn fill(&mut self) -> io::Result<()> {
        while !self.ended && self.order.len() < self.window {
            let frame = match self.stash.take() {
                Some(frame) => frame,
                None => match read_frame(&mut self.input, self.budget.buffer())? {
                    Some(frame) => frame,
                    None => {
                        self.ended = true;
                        break;
                    }
                },
            };
            // Wait for memory only when nothing is in flight (else the reader could wait for
            // itself); the tickets held by pending writes come back as files are written.
            let ticket = if self.order.is_empty() {
                self.budget.take()
            } else if let Some(ticket) = self.budget.try_take() {
                ticket
            } else {
                self.stash = Some(frame);
                break;
            };
            let job = DecodeJob {
                index: self.next,
                frame,
                ticket,
            };
            let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
            if !matches!(sent, Some(Ok(()))) {
                return Err(io::Error::other("the decompression threads stopped"));
            }
            self.order.push_back(self.next);
            self.next += 1;
        }
        Ok(())
    }
}

impl<R: Read> Pieces for Indexed<R> {
    fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        self.fill()?;
        let Some(index) = self.order.pop_front() else {
            return Ok(None);
        };
        loop {
            if let Some(decoded) = self.ready.remove(&index) {
                let (data, headers) = decoded?;
                return Ok(Some(Piece {
                    data: Data::Bytes(Arc::new(data)),
                    headers: Some(headers),
                }));
            }
            match self.done.recv() {
                Ok((i, decoded)) => {
                    self.ready.insert(i, decoded);
                }
                Err(_) => return Err(io::Error::other("the decompression threads stopped")),
            }
        }
    }
}
