//! The queue between the build and a slow consumer: bounded in memory, spilling to a local file.
//!
//! The build's side is as cheap as it can be: [`LogBuffer::push`] appends a chunk of the log
//! (many lines, as read from a command's output) with the time it was read, and never waits for
//! the consumer. Chunks go to memory up to a budget, then to a spill file (appended, read back in
//! order once memory has drained), so a service that is slow or down costs disk, not the build's
//! time or the agent's memory. The file is written by a thread of its own, in zstd-compressed
//! blocks: the build's thread only copies chunks into a block in memory. Everything per line (cutting, timestamps, text, batches) happens
//! on the consumer's thread: it takes chunks ([`LogBuffer::take`]), cuts them into lines with a
//! [`LineCutter`] and batches them to a service's limits ([`LineCutter::batch`], [`BatchLimits`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes of a record's header: the time (`i64`) and the length (`u32`), little-endian.
const HEADER: usize = 12;

/// The size of a block of records in memory, and of one frame of the spill file.
const BLOCK: usize = 1 << 20;

/// Bytes of a spill frame's header (see [`compress_frame`]).
const FRAME_HEADER: usize = 16;

/// Full blocks handed to the spill writer and not written yet, at most: beyond, the build waits
/// for the disk.
pub const MAX_PENDING: usize = 4;

/// The zstd level of spilled blocks: the fastest that still compresses a build log several times
/// (measured on a 64 MiB file listing: level -1 7.5x at 740 MB/s, level 1 8.7x at 540 MB/s, lz4
/// 5.6x at 900 MB/s; 40-byte `yes` lines over 1000x at any level), so that a slow service costs
/// a fraction of the log in disk, and freeing the file at the end is quick.
pub const SPILL_LEVEL: i32 = -1;

/// One line (or, for a line over a service's limit, one piece of it): its time in milliseconds
/// since the Unix epoch (never earlier than the line before it) and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The text.
    pub text: String,
}

/// How a batch is cut: at most `max_events` entries, at most `max_bytes` counting
/// `overhead_per_event` per entry, first and last entry at most `max_span_ms` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Entries per batch.
    pub max_events: usize,
    /// Bytes per batch (texts plus the overhead).
    pub max_bytes: usize,
    /// Bytes counted per entry on top of its text.
    pub overhead_per_event: usize,
    /// The largest distance in milliseconds between a batch's first and last timestamp.
    pub max_span_ms: i64,
}

/// Entries taken for one request, in order.
#[derive(Debug, Default)]
pub struct Batch {
    /// The entries.
    pub entries: Vec<Entry>,
    /// Their size as [`BatchLimits`] counts it.
    pub bytes: usize,
}

/// Counts of what went through a buffer, in lines (newlines, and an unfinished last line once
/// the buffer is closed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Lines pushed.
    pub pushed: u64,
    /// Lines written to the spill file.
    pub spilled: u64,
    /// Lines lost because the spill file could not be written or read back.
    pub lost: u64,
    /// Bytes waiting (in memory or spilled).
    pub waiting_bytes: u64,
    /// Bytes of records written to the spill file, in all.
    pub spill_raw_bytes: u64,
    /// Bytes those took in the file, compressed, in all.
    pub spill_file_bytes: u64,
}

/// A block of records on its way through the spill side, with the lines it holds.
#[derive(Default)]
struct Block {
    bytes: Vec<u8>,
    lines: u64,
}

/// The spill file: compressed frames of blocks, appended by the spill writer's thread and read
/// back in order by the consumer.
struct Spill {
    file: Arc<File>,
    /// Bytes of whole frames in the file.
    written: u64,
    /// Where the next frame to read starts.
    read: u64,
    /// Raw bytes (records) in the frames not read yet.
    unread_raw: u64,
    /// Lines in the frames not read yet.
    lines: u64,
}

impl Spill {
    fn unread(&self) -> u64 {
        self.written - self.read
    }
}

struct State {
    /// Blocks of records, oldest first; only the last one grows.
    memory: VecDeque<Vec<u8>>,
    memory_bytes: usize,
    /// Emptied blocks, kept for reuse (at most a few).
    spare: Vec<Vec<u8>>,
    // The spill side, in the log's order after `memory`: the file, the block the writer is
    // writing, the blocks handed to it, and the block the build is filling.
    spill: Option<Spill>,
    /// The raw size and lines of the block the writer holds (not in the file yet).
    writing: Option<(u64, u64)>,
    pending: VecDeque<Block>,
    filling: Block,
    /// Raw bytes on the spill side not taken by the consumer yet.
    spill_bytes: u64,
    spill_error: Option<String>,
    /// Whether the buffer is gone (the writer's thread ends).
    stop: bool,
    /// Whether the last byte pushed ended a line (true before the first).
    at_line_start: bool,
    closed: bool,
    stats: BufferStats,
    /// Whether the consumer was woken for the waiting bytes (cleared when it takes).
    woken: bool,
}

impl State {
    fn waiting_bytes(&self) -> u64 {
        self.memory_bytes as u64 + self.spill_bytes
    }

    fn spare_block(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    fn recycle(&mut self, mut block: Vec<u8>) {
        if self.spare.len() < 2 && block.capacity() <= 2 * BLOCK {
            block.clear();
            self.spare.push(block);
        }
    }

    /// The file's content cannot be used any more: its lines, and those of the block being
    /// written to it, are lost.
    fn lose_file(&mut self, error: String) {
        if let Some(spill) = self.spill.take() {
            let (raw, lines) = self.writing.unwrap_or((0, 0));
            self.stats.lost += spill.lines + lines;
            self.spill_bytes -= spill.unread_raw + raw;
        }
        self.spill_error.get_or_insert(error);
    }
}

/// What the build, the consumer and the spill writer share.
struct Inner {
    state: Mutex<State>,
    /// The consumer waits here for bytes, the close or a wake.
    ready: Condvar,
    /// The spill writer waits here for a block to write (or the buffer's end).
    work: Condvar,
    /// A block left the hand-off or landed in the file: the build waits here for room, the
    /// consumer for the block being written.
    moved: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, condvar: &Condvar, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        condvar.wait(state).unwrap_or_else(|p| p.into_inner())
    }
}

/// A bounded, spilling queue of log chunks with one producer side and one consumer side.
///
/// Spilling is done by a thread of the buffer's own (started at the first spill): the build's
/// side only appends records to a block in memory and hands full blocks over (at most
/// [`MAX_PENDING`] wait; beyond, the build waits for the disk, which it did itself before); the
/// writer compresses each block (zstd, [`SPILL_LEVEL`]) and appends it to the file. Order is
/// kept: memory, then the file, the block being written, the blocks handed over, and the block
/// being filled; the consumer takes the last three directly once the file is read, without the
/// disk.
pub struct LogBuffer {
    inner: Arc<Inner>,
    memory_limit: usize,
    wake_at: usize,
    spill_dir: std::path::PathBuf,
}

impl Drop for LogBuffer {
    fn drop(&mut self) {
        // Nobody reads what is not written yet: the writer stops at once.
        self.inner.lock().stop = true;
        self.inner.work.notify_all();
    }
}

impl LogBuffer {
    /// A buffer keeping up to `memory_limit` bytes in memory and the rest in a file created in
    /// `spill_dir` when needed; the consumer is woken when `wake_at` bytes wait.
    pub fn new(memory_limit: usize, wake_at: usize, spill_dir: &Path) -> LogBuffer {
        LogBuffer {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    memory: VecDeque::new(),
                    memory_bytes: 0,
                    spare: Vec::new(),
                    spill: None,
                    writing: None,
                    pending: VecDeque::new(),
                    filling: Block::default(),
                    spill_bytes: 0,
                    spill_error: None,
                    stop: false,
                    at_line_start: true,
                    closed: false,
                    stats: BufferStats::default(),
                    woken: false,
                }),
                ready: Condvar::new(),
                work: Condvar::new(),
                moved: Condvar::new(),
            }),
            memory_limit,
            wake_at,
            spill_dir: spill_dir.to_path_buf(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    /// Queues `bytes` of the log, read at `timestamp` (milliseconds since the Unix epoch); never
    /// waits for the consumer (only, when the spill writer is [`MAX_PENDING`] blocks behind, for
    /// the disk). The bytes need not be whole lines: a line takes the time of the chunk its
    /// first byte came in.
    pub fn push(&self, timestamp: i64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // Counted before the lock.
        let lines = newlines(bytes);
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.stats.pushed += lines;
        state.at_line_start = bytes.ends_with(b"\n");
        let size = HEADER + bytes.len();
        // Order: once something is on the spill side, everything after it goes there too until
        // the consumer has taken it all.
        if state.spill_bytes == 0 && state.memory_bytes + size <= self.memory_limit {
            state.memory_bytes += size;
            let room = state
                .memory
                .back()
                .is_some_and(|b| b.capacity() - b.len() >= size);
            if !room {
                let mut block = state.spare_block();
                block.reserve(size.max(BLOCK));
                state.memory.push_back(block);
            }
            let block = state.memory.back_mut().expect("a block");
            append_record(block, timestamp, bytes);
        } else {
            state = self.spill(state, timestamp, bytes, lines);
        }
        if !state.woken && state.waiting_bytes() >= self.wake_at as u64 {
            state.woken = true;
            self.inner.ready.notify_all();
        }
    }

    fn spill<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        timestamp: i64,
        bytes: &[u8],
        lines: u64,
    ) -> MutexGuard<'a, State> {
        if state.spill.is_none() && state.spill_error.is_none() {
            match self.start_spill() {
                Ok(spill) => state.spill = Some(spill),
                Err(e) => {
                    state.spill_error = Some(format!(
                        "cannot create a spill file in {}: {e}",
                        self.spill_dir.display()
                    ))
                }
            }
        }
        let size = HEADER + bytes.len();
        if !state.filling.bytes.is_empty() && state.filling.bytes.len() + size > BLOCK {
            // The block is full: hand it over, waiting for room when the writer is behind.
            while state.spill.is_some() && state.pending.len() >= MAX_PENDING {
                state = self.inner.wait(&self.inner.moved, state);
            }
            if state.spill.is_some() {
                let bytes = state.spare_block();
                let block = std::mem::replace(&mut state.filling, Block { bytes, lines: 0 });
                state.pending.push_back(block);
                self.inner.work.notify_all();
            }
        }
        if state.spill.is_none() {
            // No file (it could not be created or written): what does not fit is lost, counted.
            state.stats.lost += lines;
            return state;
        }
        if state.filling.bytes.capacity() == 0 {
            state.filling.bytes.reserve(size.max(BLOCK));
        }
        append_record(&mut state.filling.bytes, timestamp, bytes);
        state.filling.lines += lines;
        state.spill_bytes += size as u64;
        state.stats.spilled += lines;
        state
    }

    /// Creates the spill file and starts the thread that writes it.
    fn start_spill(&self) -> io::Result<Spill> {
        // Removed at once: the open handles keep it until the buffer goes.
        let file = Arc::new(tempfile::tempfile_in(&self.spill_dir)?);
        let inner = self.inner.clone();
        std::thread::Builder::new()
            .name("log-spill".into())
            .spawn(move || write_spill(&inner))?;
        Ok(Spill {
            file,
            written: 0,
            read: 0,
            unread_raw: 0,
            lines: 0,
        })
    }

    /// Ends the producer side: later pushes are ignored, and the consumer is woken.
    pub fn close(&self) {
        let mut state = self.lock();
        if !state.closed && !state.at_line_start {
            // The log's last line, unfinished.
            state.stats.pushed += 1;
        }
        state.closed = true;
        self.inner.ready.notify_all();
    }

    /// Wakes a consumer waiting in [`LogBuffer::wait`] (the end of the build was asked for).
    pub fn wake(&self) {
        let _state = self.lock();
        self.inner.ready.notify_all();
    }

    /// Whether [`LogBuffer::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether nothing waits (in memory or on the spill side).
    pub fn is_empty(&self) -> bool {
        self.lock().waiting_bytes() == 0
    }

    /// Waits until `wake_at` bytes wait, the buffer is closed, [`LogBuffer::wake`] is called or
    /// `until` passes.
    pub fn wait(&self, until: Instant) {
        let mut state = self.lock();
        loop {
            if state.closed || state.waiting_bytes() >= self.wake_at as u64 {
                return;
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            let (next, timeout) = self
                .inner
                .ready
                .wait_timeout(state, until - now)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            if !timeout.timed_out() {
                // Woken: by data, close or wake().
                return;
            }
        }
    }

    /// Sleeps for `duration` unless woken earlier (by close or [`LogBuffer::wake`]).
    pub fn sleep(&self, duration: Duration) {
        let state = self.lock();
        let _ = self.inner.ready.wait_timeout(state, duration);
    }

    /// Takes the oldest chunks waiting (about a block, 1 MiB) and gives them to `cutter`, in
    /// order; false when nothing waited.
    pub fn take(&self, cutter: &mut LineCutter) -> bool {
        let mut state = self.lock();
        state.woken = false;
        if let Some(block) = state.memory.pop_front() {
            state.memory_bytes -= block.len();
            drop(state);
            for_each_record(&block, |timestamp, bytes| cutter.push(timestamp, bytes));
            self.lock().recycle(block);
            return true;
        }
        // Memory is empty: continue with the spill side, in order.
        loop {
            if let Some(spill) = state.spill.as_ref().filter(|s| s.unread() > 0) {
                let (file, from) = (spill.file.clone(), spill.read);
                let mut block = state.spare_block();
                // Read without the lock: the build keeps appending, the writer writing.
                drop(state);
                let read = read_frame(&file, from, &mut block);
                state = self.lock();
                return match (read, state.spill.as_mut()) {
                    (Ok(frame), Some(spill)) => {
                        spill.read += frame.size;
                        spill.unread_raw -= block.len() as u64;
                        spill.lines -= frame.lines.min(spill.lines);
                        state.spill_bytes -= block.len() as u64;
                        drop(state);
                        for_each_record(&block, |timestamp, bytes| cutter.push(timestamp, bytes));
                        self.lock().recycle(block);
                        true
                    }
                    // Lost meanwhile (the writer failed): counted.
                    (Ok(_), None) => false,
                    (Err(e), _) => {
                        // The rest of the file cannot be read back: those lines are lost, not
                        // retried forever.
                        state.lose_file(format!("cannot read the spill file: {e}"));
                        false
                    }
                };
            }
            if state.writing.is_some() {
                // The next block is on its way to the file: a moment.
                state = self.inner.wait(&self.inner.moved, state);
                continue;
            }
            break;
        }
        // The file is read to its end.
        if let Some(spill) = state.spill.as_mut().filter(|s| s.written > 0) {
            // Start it over so that it does not grow for the whole build.
            if spill.file.set_len(0).is_ok() {
                spill.read = 0;
                spill.written = 0;
            }
        }
        let block = match state.pending.pop_front() {
            Some(block) => {
                self.inner.moved.notify_all();
                block
            }
            None if !state.filling.bytes.is_empty() => std::mem::take(&mut state.filling),
            None => return false,
        };
        state.spill_bytes -= block.bytes.len() as u64;
        drop(state);
        for_each_record(&block.bytes, |timestamp, bytes| {
            cutter.push(timestamp, bytes)
        });
        self.lock().recycle(block.bytes);
        true
    }

    /// What went through the buffer so far.
    pub fn stats(&self) -> BufferStats {
        let state = self.lock();
        let mut stats = state.stats;
        stats.waiting_bytes = state.waiting_bytes();
        stats
    }

    /// Why spilling failed, if it did.
    pub fn spill_error(&self) -> Option<String> {
        self.lock().spill_error.clone()
    }
}

/// The spill writer's thread: compresses the blocks handed over and appends them to the file,
/// in order, until the buffer is gone or the file fails.
fn write_spill(inner: &Inner) {
    let mut compressor = zstd::bulk::Compressor::new(SPILL_LEVEL);
    let mut frame = Vec::new();
    let mut state = inner.lock();
    loop {
        if state.stop || state.spill.is_none() {
            return;
        }
        let Some(block) = state.pending.pop_front() else {
            state = inner.wait(&inner.work, state);
            continue;
        };
        let spill = state.spill.as_ref().expect("a spill file");
        let (file, at) = (spill.file.clone(), spill.written);
        let (raw, lines) = (block.bytes.len() as u64, block.lines);
        state.writing = Some((raw, lines));
        inner.moved.notify_all();
        drop(state);
        let written = match compressor.as_mut() {
            Ok(compressor) => compress_frame(compressor, &block, &mut frame)
                .and_then(|()| file.write_all_at(&frame, at)),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        state = inner.lock();
        match (written, state.spill.as_mut()) {
            (Ok(()), Some(spill)) => {
                spill.written += frame.len() as u64;
                spill.unread_raw += raw;
                spill.lines += lines;
                state.writing = None;
                state.stats.spill_raw_bytes += raw;
                state.stats.spill_file_bytes += frame.len() as u64;
            }
            (Ok(()), None) => {
                // The file was lost meanwhile (counted with the block being written).
                state.writing = None;
            }
            (Err(e), _) => {
                state.lose_file(format!("cannot write the spill file: {e}"));
                state.writing = None;
            }
        }
        state.recycle(block.bytes);
        inner.moved.notify_all();
    }
}

/// `block` as a frame of the spill file in `frame`: the compressed length (`u32`), the raw
/// length (`u32`) and the lines (`u64`), little-endian, then the zstd frame.
fn compress_frame(
    compressor: &mut zstd::bulk::Compressor<'_>,
    block: &Block,
    frame: &mut Vec<u8>,
) -> io::Result<()> {
    let mut compressed = std::mem::take(frame);
    compressed.clear();
    compressed.reserve(zstd::zstd_safe::compress_bound(block.bytes.len()) + FRAME_HEADER);
    // Compressed first, then moved up behind the header (a copy of a fraction of a block).
    let size = compressor.compress_to_buffer(&block.bytes, &mut compressed)?;
    let mut head = [0u8; FRAME_HEADER];
    head[..4].copy_from_slice(&(size as u32).to_le_bytes());
    head[4..8].copy_from_slice(&(block.bytes.len() as u32).to_le_bytes());
    head[8..].copy_from_slice(&block.lines.to_le_bytes());
    compressed.splice(0..0, head);
    *frame = compressed;
    Ok(())
}

/// A frame's size in the file and the lines it holds.
struct Frame {
    size: u64,
    lines: u64,
}

/// The frame at `from`, its block decompressed into `block`.
fn read_frame(file: &File, from: u64, block: &mut Vec<u8>) -> io::Result<Frame> {
    let mut head = [0u8; FRAME_HEADER];
    file.read_exact_at(&mut head, from)?;
    let size = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let raw = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
    let lines = u64::from_le_bytes(head[8..].try_into().expect("8 bytes"));
    let mut compressed = vec![0u8; size];
    file.read_exact_at(&mut compressed, from + FRAME_HEADER as u64)?;
    block.clear();
    block.reserve(raw);
    let got = zstd::bulk::Decompressor::new()?.decompress_to_buffer(&compressed, block)?;
    if got != raw {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame at {from} holds {got} bytes, not {raw}"),
        ));
    }
    Ok(Frame {
        size: (FRAME_HEADER + size) as u64,
        lines,
    })
}

fn append_record(block: &mut Vec<u8>, timestamp: i64, bytes: &[u8]) {
    block.extend_from_slice(&timestamp.to_le_bytes());
    block.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    block.extend_from_slice(bytes);
}

/// The newlines in `bytes`. Counted in runs of 255 bytes into a `u8`, which the compiler turns
/// into byte-wide vector compares (a plain `filter().count()` into a `usize` does not
/// vectorise as well: it was the build thread's largest cost in the sink's profile).
fn newlines(bytes: &[u8]) -> u64 {
    bytes
        .chunks(255)
        .map(|run| u64::from(run.iter().map(|&b| u8::from(b == b'\n')).sum::<u8>()))
        .sum()
}

fn record_len(record: &[u8]) -> usize {
    u32::from_le_bytes(record[8..HEADER].try_into().expect("4 bytes")) as usize
}

fn for_each_record(mut records: &[u8], mut each: impl FnMut(i64, &[u8])) {
    while records.len() >= HEADER {
        let timestamp = i64::from_le_bytes(records[..8].try_into().expect("8 bytes"));
        let len = record_len(records);
        each(timestamp, &records[HEADER..HEADER + len]);
        records = &records[HEADER + len..];
    }
}

/// Cuts chunks of the log into lines on the consumer's side: each line with the time of the
/// chunk its first byte came in (kept in order: a time earlier than the line before, a clock set
/// back, takes that line's time), invalid UTF-8 replaced by U+FFFD, and lines longer than
/// `max_line` bytes cut into pieces at character boundaries (one event each).
#[derive(Debug)]
pub struct LineCutter {
    max_line: usize,
    partial: Vec<u8>,
    partial_at: i64,
    last: i64,
    lines: VecDeque<Entry>,
    /// Bytes of `lines`' texts.
    bytes: usize,
    /// Whole lines cut so far (a line cut into pieces counts once).
    cut: u64,
    /// Pieces beyond the first of the lines cut into pieces.
    extra: u64,
}

impl LineCutter {
    /// A cutter at the start of a log; `max_line` is the longest text of one entry.
    pub fn new(max_line: usize) -> LineCutter {
        LineCutter {
            max_line,
            partial: Vec::new(),
            partial_at: 0,
            last: 0,
            lines: VecDeque::new(),
            bytes: 0,
            cut: 0,
            extra: 0,
        }
    }

    /// Adds the chunk `bytes`, read at `timestamp`.
    pub fn push(&mut self, timestamp: i64, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(end + 1);
            if self.partial.is_empty() {
                self.line(timestamp, line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(self.partial_at, &whole);
                whole.clear();
                self.partial = whole;
            }
            bytes = rest;
        }
        if !bytes.is_empty() {
            if self.partial.is_empty() {
                self.partial_at = timestamp;
            }
            self.partial.extend_from_slice(bytes);
        }
    }

    /// The end of the log: its unfinished last line becomes a line.
    pub fn finish(&mut self) {
        if !self.partial.is_empty() {
            let partial = std::mem::take(&mut self.partial);
            self.line(self.partial_at, &partial);
        }
    }

    fn line(&mut self, timestamp: i64, line: &[u8]) {
        let timestamp = timestamp.max(self.last);
        self.last = timestamp;
        self.cut += 1;
        let text = String::from_utf8_lossy(line);
        if text.len() <= self.max_line {
            self.bytes += text.len();
            self.lines.push_back(Entry {
                timestamp,
                text: text.into_owned(),
            });
            return;
        }
        let pieces = split(&text, self.max_line);
        self.extra += pieces.len() as u64 - 1;
        for piece in pieces {
            self.bytes += piece.len();
            self.lines.push_back(Entry {
                timestamp,
                text: piece.to_string(),
            });
        }
    }

    /// The next entry cut, if any.
    pub fn pop(&mut self) -> Option<Entry> {
        let entry = self.lines.pop_front()?;
        self.bytes -= entry.text.len();
        Some(entry)
    }

    /// The entries cut and not taken yet.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no entry waits.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Whether the entries waiting fill a batch within `limits` (more would not fit in it).
    pub fn fills(&self, limits: &BatchLimits) -> bool {
        let span = match (self.lines.front(), self.lines.back()) {
            (Some(first), Some(last)) => last.timestamp - first.timestamp,
            _ => 0,
        };
        self.lines.len() >= limits.max_events
            || self.bytes + self.lines.len() * limits.overhead_per_event >= limits.max_bytes
            || span > limits.max_span_ms
    }

    /// Takes the next batch within `limits` from the entries waiting (empty when none wait).
    /// An entry too large for any batch on its own is taken alone.
    pub fn batch(&mut self, limits: &BatchLimits) -> Batch {
        let mut batch = Batch::default();
        while let Some(entry) = self.lines.front() {
            let fits = match batch.entries.first() {
                None => true,
                Some(first) => {
                    batch.entries.len() < limits.max_events
                        && batch.bytes + entry.text.len() + limits.overhead_per_event
                            <= limits.max_bytes
                        && entry.timestamp - first.timestamp <= limits.max_span_ms
                }
            };
            if !fits {
                break;
            }
            let entry = self.pop().expect("a front entry");
            batch.bytes += entry.text.len() + limits.overhead_per_event;
            batch.entries.push(entry);
        }
        batch
    }

    /// Whole lines cut so far.
    pub fn lines_cut(&self) -> u64 {
        self.cut
    }

    /// Entries beyond one per line (the pieces of long lines).
    pub fn extra_pieces(&self) -> u64 {
        self.extra
    }
}

/// `text` in pieces of at most `max` bytes, cut at character boundaries.
pub fn split(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut end = max;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        pieces.push(piece);
        rest = tail;
    }
    pieces.push(rest);
    pieces
}

/// Milliseconds since the Unix epoch (0 for earlier times).
pub fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CWL: BatchLimits = BatchLimits {
        max_events: 10_000,
        max_bytes: 1_048_576,
        overhead_per_event: 26,
        max_span_ms: 24 * 3600 * 1000 - 1,
    };

    /// Every batch the buffer's content makes, as a consumer takes them.
    fn drain(buffer: &LogBuffer, cutter: &mut LineCutter, limits: &BatchLimits) -> Vec<Batch> {
        let mut batches = Vec::new();
        loop {
            while !cutter.fills(limits) && buffer.take(cutter) {}
            if buffer.is_closed() && buffer.is_empty() {
                cutter.finish();
            }
            let batch = cutter.batch(limits);
            if batch.entries.is_empty() {
                return batches;
            }
            batches.push(batch);
        }
    }

    #[test]
    fn batches_stay_within_the_count_and_size_limits_and_keep_order() {
        let dir = tempfile::tempdir().unwrap();
        // A small memory budget: most chunks go through the spill file.
        let buffer = LogBuffer::new(64 * 1024, 1, dir.path());
        let mut chunk = String::new();
        for i in 0..25_000 {
            chunk.push_str(&format!("line {i}\n"));
            if i % 1000 == 999 {
                buffer.push(1000 + i, chunk.as_bytes());
                chunk.clear();
            }
        }
        let long = "x".repeat(200_000);
        for i in 0..12 {
            buffer.push(50_000 + i, long.as_bytes());
            buffer.push(50_000 + i, b"\n");
        }
        buffer.close();
        let stats = buffer.stats();
        assert_eq!(stats.pushed, 25_012);
        assert!(stats.spilled > 15_000, "{stats:?}");
        let mut cutter = LineCutter::new(256 * 1024 - 26);
        let batches = drain(&buffer, &mut cutter, &CWL);
        let mut seen = 0;
        let mut last = 0;
        for b in &batches {
            assert!(b.entries.len() <= 10_000);
            let bytes: usize = b.entries.iter().map(|e| e.text.len() + 26).sum();
            assert_eq!(bytes, b.bytes);
            assert!(bytes <= 1_048_576, "{bytes}");
            for e in &b.entries {
                assert!(e.timestamp >= last);
                last = e.timestamp;
                if seen < 25_000 {
                    assert_eq!(e.text, format!("line {seen}\n"));
                } else {
                    assert_eq!(e.text, format!("{long}\n"));
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 25_012);
        assert_eq!(cutter.lines_cut(), 25_012);
        // 25,000 short ones: 10,000 + 10,000 + 5,000 (37 bytes each as counted) with 4 long
        // ones (200,027 each), then 5 long per MiB.
        assert_eq!(batches[0].entries.len(), 10_000);
        assert_eq!(batches[2].entries.len(), 5_004);
        assert_eq!(buffer.stats().waiting_bytes, 0);
    }

    #[test]
    fn a_batch_never_spans_more_than_its_window_and_time_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = LogBuffer::new(1 << 20, 1, dir.path());
        let day = 24 * 3600 * 1000;
        buffer.push(10, b"a\n");
        buffer.push(5, b"clock set back\n");
        buffer.push(10 + day - 1, b"b\n");
        buffer.push(10 + day, b"c\n");
        let mut cutter = LineCutter::new(100);
        let batches = drain(&buffer, &mut cutter, &CWL);
        let got: Vec<Vec<i64>> = batches
            .iter()
            .map(|b| b.entries.iter().map(|e| e.timestamp).collect())
            .collect();
        assert_eq!(got, vec![vec![10, 10, 10 + day - 1], vec![10 + day]]);
    }

    #[test]
    fn lines_take_the_time_of_their_first_byte_and_long_ones_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = LogBuffer::new(1 << 20, 1, dir.path());
        buffer.push(1, b"one\ntw");
        buffer.push(2, b"o\nthr\xff");
        buffer.push(3, b"\n");
        // `é` is two bytes: it would straddle the first cut at 10.
        buffer.push(4, "aaaaaaaaaébbbbbbbbbbbb\n".as_bytes());
        buffer.push(5, b"tail");
        buffer.close();
        assert_eq!(buffer.stats().pushed, 5);
        let mut cutter = LineCutter::new(10);
        let got: Vec<(i64, String)> = drain(&buffer, &mut cutter, &CWL)
            .into_iter()
            .flat_map(|b| b.entries)
            .map(|e| (e.timestamp, e.text))
            .collect();
        let want = [
            (1, "one\n"),
            (1, "two\n"),
            (2, "thr\u{fffd}\n"),
            (4, "aaaaaaaaa"),
            (4, "ébbbbbbbb"),
            (4, "bbbb\n"),
            (5, "tail"),
        ];
        let want: Vec<(i64, String)> = want.iter().map(|(t, s)| (*t, s.to_string())).collect();
        assert_eq!(got, want);
        assert_eq!((cutter.lines_cut(), cutter.extra_pieces()), (5, 2));
    }

    #[test]
    fn memory_and_spill_keep_one_order_across_refills() {
        let dir = tempfile::tempdir().unwrap();
        // Room for three chunks in memory.
        let buffer = LogBuffer::new(3 * (HEADER + 5), 1, dir.path());
        let mut cutter = LineCutter::new(100);
        let mut next = 0;
        let mut taken = Vec::new();
        for round in 0..20 {
            for _ in 0..(round % 9 + 1) {
                next += 1;
                buffer.push(next, format!("{next:04}\n").as_bytes());
            }
            buffer.take(&mut cutter);
            while let Some(e) = cutter.pop() {
                taken.push(e.text);
            }
        }
        while buffer.take(&mut cutter) {}
        while let Some(e) = cutter.pop() {
            taken.push(e.text);
        }
        let expected: Vec<String> = (1..=next).map(|i| format!("{i:04}\n")).collect();
        assert_eq!(taken, expected);
        assert!(buffer.stats().spilled > 0);
    }

    #[test]
    fn blocks_go_through_the_compressed_file_in_order_while_both_sides_run() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = Arc::new(LogBuffer::new(256 * 1024, 1, dir.path()));
        let line = |i: u64| format!("line {i:08} of a build's log, as a build prints it\n");
        let lines = 400_000;
        let push = |from: u64, to: u64| {
            let mut chunk = String::new();
            for i in from..to {
                chunk.push_str(&line(i));
                if chunk.len() > 60_000 || i + 1 == to {
                    buffer.push(i as i64, chunk.as_bytes());
                    chunk.clear();
                }
            }
        };
        // Half of it before the consumer starts: far more than the memory and the hand-off hold.
        push(0, lines / 2);
        let consumer = std::thread::spawn({
            let buffer = buffer.clone();
            move || {
                let mut cutter = LineCutter::new(usize::MAX);
                let mut seen = 0;
                loop {
                    let took = buffer.take(&mut cutter);
                    if !took && buffer.is_closed() && buffer.is_empty() {
                        cutter.finish();
                    }
                    while let Some(e) = cutter.pop() {
                        assert_eq!(e.text, line(seen));
                        seen += 1;
                    }
                    if !took {
                        if buffer.is_closed() && buffer.is_empty() {
                            return seen;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        });
        push(lines / 2, lines);
        buffer.close();
        assert_eq!(consumer.join().unwrap(), lines);
        let stats = buffer.stats();
        assert_eq!(
            (stats.pushed, stats.lost, stats.waiting_bytes),
            (lines, 0, 0)
        );
        assert!(stats.spilled > lines / 2, "{stats:?}");
        // Written and read back compressed: a fraction of the log in the file.
        assert!(stats.spill_raw_bytes > 8 << 20, "{stats:?}");
        assert!(
            stats.spill_file_bytes * 5 < stats.spill_raw_bytes,
            "{stats:?}"
        );
    }

    #[test]
    fn newlines_are_counted_across_runs() {
        let text: Vec<u8> = (0..10_000u32)
            .map(|i| if i % 3 == 0 { b'\n' } else { b'x' })
            .collect();
        assert_eq!(newlines(&text), 3334);
        assert_eq!(newlines(&[b'\n'; 600]), 600);
        assert_eq!(newlines(b""), 0);
    }

    #[test]
    fn a_chunk_larger_than_a_block_goes_through_the_spill_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = LogBuffer::new(0, 1, dir.path());
        let big = "y".repeat(BLOCK + 10) + "\n";
        buffer.push(1, b"small\n");
        buffer.push(2, big.as_bytes());
        buffer.push(3, b"after\n");
        let mut cutter = LineCutter::new(usize::MAX);
        while buffer.take(&mut cutter) {}
        let texts: Vec<String> = std::iter::from_fn(|| cutter.pop().map(|e| e.text)).collect();
        assert_eq!(texts, ["small\n", big.as_str(), "after\n"]);
        assert_eq!(buffer.stats().spilled, 3);
    }
}
